"""Metrics sinks: JSONL rows, truncation on resume, wandb mode decisions (never a prompt)."""

import json

import pytest

from megatron_uniapl.metrics.sinks import MetricsLogger, truncate_metrics, wandb_mode


def test_jsonl_rows_and_non_finite_values(tmp_path):
    m = MetricsLogger(tmp_path)
    m.log(1, {"loss/sft": 1.5, "reward/task_mean": 0.25})
    m.log(2, {"loss/sft": float("nan")})
    m.close()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    assert rows[0]["loss/sft"] == 1.5 and rows[0]["reward/task_mean"] == 0.25
    assert rows[1]["loss/sft"] == "nan"


def test_resume_truncates_rows_after_the_checkpoint(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"step": s}) + "\n" for s in (1, 2, 3, 4)) + '{"step": 5, "lo')
    assert truncate_metrics(path, 2) == 3  # steps 3, 4 and the partial line
    m = MetricsLogger(tmp_path, resume_step=2)
    m.log(3, {"x": 1.0})
    m.close()
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1, 2, 3]


def test_wandb_mode_never_needs_a_login(monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    assert wandb_mode(None) is None and wandb_mode("disabled") is None
    assert wandb_mode("auto") == "offline"
    assert wandb_mode("online") == "offline"
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert wandb_mode("auto") == "online"
    with pytest.raises(ValueError, match="wandb_mode must be"):
        wandb_mode("sometimes")


@pytest.mark.slow
def test_wandb_offline_run_writes_locally(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    m = MetricsLogger(tmp_path, wandb={"mode": "auto", "project": "test"}, config={"a": 1})
    m.log(1, {"loss/sft": 0.5})
    m.close()
    assert list((tmp_path / "wandb").glob("offline-run-*"))


def test_every_step_is_recorded_and_log_every_thins_only_the_console(tmp_path, caplog):
    import logging

    m = MetricsLogger(tmp_path, log_every=5, last_step=7)
    with caplog.at_level(logging.INFO, logger="megatron_uniapl.metrics.sinks"):
        for step in range(1, 8):
            m.log(step, {"loss/total": 1.0 / step})
    m.close()
    assert [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == list(range(1, 8))
    shown = [r.getMessage().split(":")[0] for r in caplog.records if r.getMessage().startswith("step ")]
    assert shown == ["step 5", "step 7"]  # every log_every-th step, and the last


def test_a_fresh_start_keeps_an_earlier_record(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\n{"step": 2}\n')
    m = MetricsLogger(tmp_path, resume_step=0)
    m.log(1, {"x": 1.0})
    m.close()
    [aside] = tmp_path.glob("metrics.jsonl.before-*")
    assert aside.read_text() == '{"step": 1}\n{"step": 2}\n'
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1]
