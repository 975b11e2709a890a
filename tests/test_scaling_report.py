"""The scaling report on synthetic metrics files, against efficiencies computed by hand."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from scaling_report import ReportError, compare, main, summarize, table

ROOT = Path(__file__).resolve().parents[1]


def write_run(root: Path, name: str, nodes: int, steps: list[tuple[float, float, float, float]]) -> Path:
    """steps: (tokens_per_s, step_s, generate_s, train_s); the first step is a warm-up."""
    run = root / name
    run.mkdir()
    lines = [json.dumps({"step": i, "nodes": nodes, "gpus": 8 * nodes, "throughput/tokens_per_s": t,
                         "time/step_s": s, "time/generate_s": g, "time/train_s": tr, "loss/total": 0.5})
             for i, (t, s, g, tr) in enumerate(steps)]
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    return run


@pytest.fixture
def study(tmp_path):
    # 1 node: after the warm-up step, 10 s at 8000 tok/s and 10 s at 12000 -> 200000 tokens / 20 s.
    a = write_run(tmp_path, "nodes_1", 1, [(100.0, 60.0, 50.0, 10.0), (8000.0, 10.0, 4.0, 6.0), (12000.0, 10.0, 6.0, 4.0)])
    # 2 nodes: 18000 tok/s at 10 s, twice.
    b = write_run(tmp_path, "nodes_2", 2, [(50.0, 90.0, 80.0, 10.0), (18000.0, 10.0, 5.0, 5.0), (18000.0, 10.0, 5.0, 5.0)])
    # 4 nodes: 5 s at 24000 tok/s and 15 s at 32000 -> (120000 + 480000) / 20 = 30000 tok/s.
    c = write_run(tmp_path, "nodes_4", 4, [(10.0, 99.0, 90.0, 9.0), (24000.0, 5.0, 3.0, 2.0), (32000.0, 15.0, 9.0, 6.0)])
    return [c, a, b]


def test_summaries_and_efficiencies_by_hand(study):
    runs = compare([summarize(p) for p in study])
    assert [r.name for r in runs] == ["nodes_1", "nodes_2", "nodes_4"]
    one, two, four = runs
    assert one.tokens_per_s == 10000.0 and one.tokens_per_s_per_gpu == 1250.0
    assert two.tokens_per_s == 18000.0 and two.tokens_per_s_per_gpu == 1125.0
    assert four.tokens_per_s == 30000.0 and four.tokens_per_s_per_gpu == 937.5
    assert [r.efficiency for r in runs] == [1.0, 0.9, 0.75]      # 1125/1250, 937.5/1250
    assert one.phases == {"generate": 5.0, "train": 5.0} and one.step_s == 10.0
    assert four.phases == {"generate": 6.0, "train": 4.0} and four.steps == 2
    text = table(runs)
    assert "nodes_4" in text and "0.750" in text and "937.5" in text
    # Without skipping, the slow first step counts: 1 node = (6000 + 80000 + 120000) / 80 s.
    assert summarize(study[1], skip=0).tokens_per_s == pytest.approx(206000 / 80)


def test_cli_writes_table_and_png(study, tmp_path, capsys):
    png = tmp_path / "plot" / "scaling.png"
    assert main([str(p) for p in study] + ["--plot", str(png)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[:7] == ["run", "nodes", "gpus", "steps", "tokens/s", "tokens/s/gpu", "efficiency"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "scaling_report.py"), str(study[1])],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "nodes_1" in result.stdout


def test_bad_metrics(tmp_path, capsys):
    run = tmp_path / "broken"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"nodes": 1}\n{not json\n')
    with pytest.raises(ReportError, match=r"broken/metrics.jsonl:2: invalid JSON"):
        summarize(run)
    (run / "metrics.jsonl").write_text('{"throughput/tokens_per_s": 1.0, "time/step_s": 1.0}\n' * 3)
    with pytest.raises(ReportError, match="no 'nodes' field"):
        summarize(run)
    assert main([str(tmp_path / "missing")]) == 2
    assert "no metrics file" in capsys.readouterr().out


def test_a_study_folder_stands_for_its_runs(study, tmp_path, capsys):
    """`scaling_report.py runs/scaling/<recipe>`: the folder slurm/scaling_study.sh fills, one run per node count."""
    assert main([str(tmp_path)]) == 0
    rows = [line.split()[0] for line in capsys.readouterr().out.splitlines()[1:]]
    assert rows == ["nodes_1", "nodes_2", "nodes_4"]


def test_a_run_logged_every_few_steps_says_why_it_has_nothing(tmp_path):
    run = tmp_path / "short"
    run.mkdir()
    (run / "metrics.jsonl").write_text(json.dumps({"step": 5, "nodes": 1, "gpus": 1, "throughput/tokens_per_s": 1.0,
                                                   "time/step_s": 1.0}) + "\n")
    with pytest.raises(ReportError, match=r"rows for 1 of 5 steps: run with logging.log_every=1"):
        summarize(run)
    assert summarize(run, skip=0).steps == 1
