"""The pre-launch check lists every unusable path of a recipe at once."""

from __future__ import annotations

from pathlib import Path

from megatron_uniapl.launch_check import check, main

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "recipes" / "tiny_cpu.yaml")


def test_tiny_recipe_is_launchable(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert check(TINY, [f"logging.run_dir={tmp_path}/run"], world=1) == []


def test_every_problem_is_listed(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    problems = check(TINY, [
        "model.create_tiny=false", f"model.hf_dir={tmp_path}/none", f"model.init_checkpoint={tmp_path}/ckpt",
        f"data.demo_file={tmp_path}/d.jsonl", f"checkpoint.resume={tmp_path}/step_5",
        f"logging.run_dir={tmp_path}/run",
    ], world=1)
    assert f"model.hf_dir={tmp_path}/none: no config.json there (a Hugging Face Qwen3 directory is expected)" in problems
    assert any(p.startswith(f"model.init_checkpoint={tmp_path}/ckpt: not a directory") for p in problems)
    assert f"data.demo_file={tmp_path}/d.jsonl: no such file" in problems
    assert any(p.startswith(f"checkpoint.resume={tmp_path}/step_5: no such checkpoint") for p in problems)
    assert len(problems) == 4  # the run directory can be created: no problem reported for it


def test_config_errors_and_world(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert check("recipes/nope.yaml", [], None) == ["recipe recipes/nope.yaml: no such file (paths are relative to the repository root)"]
    [problem] = check(TINY, ["model.tensor_parallel=2"], world=3)
    assert "3 ranks are not divisible" in problem
    assert main(["--config", TINY, "--world", "1", "train.stepz=3"]) == 2
    assert "did you mean 'steps'" in capsys.readouterr().out


def test_every_bad_override_and_path_is_listed(tmp_path, monkeypatch):
    """Two typos and a missing file: three messages from one check, not the first one only."""
    monkeypatch.chdir(ROOT)
    problems = check(TINY, ["optimizer.lrr=1", "train.stepz=3", f"data.demo_file={tmp_path}/d.jsonl",
                            "model.tensor_parallel=2", f"logging.run_dir={tmp_path}/run"], world=3)
    assert len(problems) == 4, problems
    assert "did you mean 'lr'" in problems[0] and "did you mean 'steps'" in problems[1]
    assert "3 ranks are not divisible" in problems[2]
    assert problems[3] == f"data.demo_file={tmp_path}/d.jsonl: no such file"


def test_layouts_are_checked_against_the_models_heads(tmp_path, monkeypatch):
    from megatron_uniapl.model.tiny import create_tiny_qwen3

    monkeypatch.chdir(ROOT)
    model = create_tiny_qwen3(tmp_path / "m", with_tokenizer=False)  # 4 heads, 2 KV heads, 2 layers
    base = [f"model.hf_dir={model}", f"logging.run_dir={tmp_path}/run", "model.create_tiny=false"]
    assert check(TINY, [*base, "model.tensor_parallel=2"], world=2) == []
    [problem] = check(TINY, [*base, "model.tensor_parallel=4"], world=4)
    assert problem == f"model.tensor_parallel=4 does not divide the model's 2 key/value heads ({model}/config.json)"
    [problem] = check(TINY, [*base, "model.pipeline_parallel=4"], world=4)
    assert "does not divide the model's 2 layers" in problem
