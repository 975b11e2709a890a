"""One subprocess per class of bad input, through the commands a user types: what the in-process
suites check (exit status, one line, no traceback) holds for the real process too, with its
logging, warnings and interpreter shutdown."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
from bad_input_utils import ROOT, SMALL, TINY_RECIPE, assert_clean_error, copy_data, edit_line
from train_runs import clean_env, rows

pytestmark = pytest.mark.slow


def run(args, env=None, timeout=900):
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, env=env or clean_env(), capture_output=True, text=True,
                          timeout=timeout)
    return proc.returncode, proc.stdout + proc.stderr


def train(run_dir, hf_dir, *overrides, env=None):
    return run(["-m", "megatron_uniapl.train", "--config", str(TINY_RECIPE), *SMALL, f"logging.run_dir={run_dir}",
                f"model.hf_dir={hf_dir}", *overrides], env)


def test_train_config_layout_data_and_checkpoint_classes(tiny_tied, tmp_path):
    rc, out = train(tmp_path / "r", tiny_tied, "optimizer.lr=.nan")
    assert rc == 2
    assert_clean_error(out, r"^error: optimizer\.lr: must be a finite number, got nan$")

    rc, out = train(tmp_path / "r", tiny_tied, "model.tensor_parallel=3", env=clean_env(WORLD_SIZE="3"))
    assert rc == 2
    assert_clean_error(out, r"model\.tensor_parallel=3 does not divide the model's 4 attention heads")

    data = copy_data(tmp_path / "data")
    edit_line(data["demos"], 40, b'{"prompt": "\xe9t\xe9", "response": "x"}')
    rc, out = train(tmp_path / "r", tiny_tied, f"data.demo_file={data['demos']}")
    assert rc == 2
    assert_clean_error(out, r"demos\.jsonl:40: not UTF-8 text")

    ckpt = tmp_path / "r" / "checkpoints" / "iter_0000002"
    ckpt.mkdir(parents=True)
    (ckpt / "uniapl_train.json").write_text(json.dumps({"format": "megatron_uniapl.train/2", "step": 2,
                                                          "model": {"hidden_size": 4096}}))
    rc, out = train(tmp_path / "r", tiny_tied)
    assert rc == 2
    assert_clean_error(out, r"iter_0000002 holds another model than model\.hf_dir")
    assert not (tmp_path / "r" / "resolved_config.yaml").exists(), "a refused start wrote a resolved config"


def test_nonfinite_training_stops_cleanly_without_publishing_a_checkpoint(tiny_tied, tmp_path):
    """lr=1e30: step 1 (warm-up, lr 0) is finite and saved; step 2's update blows the weights up
    (finite gradients, so only the weight check sees it); steps 3-5 have non-finite gradients."""
    run_dir = tmp_path / "nan"
    rc, out = train(run_dir, tiny_tied, "objective.variant=sft", "optimizer.lr=1e30", "optimizer.min_lr=0",
                    "train.steps=8", "checkpoint.every=1", "checkpoint.keep_last=3")
    assert rc == 1, out[-3000:]
    line = assert_clean_error(out, r"steps 2-5 were non-finite \(more than train\.max_nonfinite_steps=3 in a row\): "
                                   r"stopping; no checkpoint was published during them and the newest checkpoint, "
                                   r"iter_0000001, predates them")
    assert "FloatingPointError" not in out and line
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["iter_0000001", "latest"]
    assert sorted(rows(run_dir)) == [1, 2, 3, 4, 5], "every step is in the record"


def test_tools_classes(tiny_tied, tmp_path):
    hf = tmp_path / "hf"
    shutil.copytree(tiny_tied, hf)
    weights = hf / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100_000])
    rc, out = run(["tools/convert_hf.py", "import", "--hf-dir", str(hf), "--out-dir", str(tmp_path / "m")])
    assert rc == 2
    assert_clean_error(out, r"model\.safetensors: not a readable safetensors file")

    data = copy_data(tmp_path / "data")
    rc, out = run(["tools/eval.py", "--model", str(hf), "--eval-file", str(data["eval"]), "--out", str(tmp_path / "e")])
    assert rc == 2
    assert_clean_error(out, r"model\.safetensors: not a readable safetensors file", prefix="eval: ")

    rc, out = run(["-m", "megatron_uniapl.launch_check", "--config", str(TINY_RECIPE), "--world", "4",
                   f"model.hf_dir={tiny_tied}", "model.tensor_parallel=4", f"logging.run_dir={tmp_path}/l"])
    assert rc == 2
    assert_clean_error(out, r"model\.tensor_parallel=4 does not divide the model's 2 key/value heads")
