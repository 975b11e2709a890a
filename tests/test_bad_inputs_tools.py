"""Bad input to the tools through their `main()` entry points (in-process): conversion, evaluation,
analysis, demo generation and the Slurm pre-launch check. Every case exits with status 2 and one
line naming the file, line or field, without a traceback, and changes none of its inputs."""

from __future__ import annotations

import json
import pickle
import shutil

import pytest
from bad_input_utils import ROOT, TINY_RECIPE, assert_clean_error, copy_data, edit_line, snapshot

from megatron_uniapl.convert.tool import main as convert


def truncate(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def broken_hf(tiny, dest, how):
    """A copy of the tiny HF model with its weight file damaged."""
    shutil.copytree(tiny, dest)
    weights = dest / "model.safetensors"
    if how == "truncated":
        truncate(weights)
    elif how == "garbled":
        weights.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all" + weights.read_bytes()[24:])
    elif how == "missing-shard":
        (dest / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"x": "model-00002.safetensors"}}))
    return dest


def run_tool(main, args, capsys, pattern, prefix, *inputs):
    before = snapshot(*inputs)
    rc = main(args)
    out = capsys.readouterr()
    assert rc == 2, out.out[-2000:] + out.err[-2000:]
    line = assert_clean_error(out.out + out.err, pattern, prefix)
    assert snapshot(*inputs) == before, "the tool changed its input"
    return line


# ---- conversion ---------------------------------------------------------------------------------

@pytest.mark.parametrize("how, pattern", [
    ("truncated", r"model\.safetensors: not a readable safetensors file \(.*incomplete metadata.*\); the file is truncated"),
    ("garbled", r"model\.safetensors: not a readable safetensors file"),
    ("missing-shard", r"model-00002\.safetensors: missing \(named by model\.safetensors\.index\.json\)"),
])
def test_import_of_damaged_safetensors(tiny_tied, tmp_path, capsys, how, pattern):
    hf = broken_hf(tiny_tied, tmp_path / "hf", how)
    run_tool(convert, ["import", "--hf-dir", str(hf), "--out-dir", str(tmp_path / "out")], capsys, pattern, "error: ", hf)
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def imported(tiny_tied, tmp_path_factory):
    out = tmp_path_factory.mktemp("conv") / "mcore"
    assert convert(["import", "--hf-dir", str(tiny_tied), "--out-dir", str(out)]) == 0
    return out


class Exploit:
    def __init__(self, target):
        self.target = str(target)

    def __reduce__(self):
        return (open, (self.target, "w"))


def _damage(ckpt, how, tmp_path):
    weights = ckpt / "weights"
    if how == "no-metadata":
        (weights / ".metadata").unlink()
    elif how == "no-tokenizer":  # what an interrupted prune of an older version left behind
        (ckpt / "hf" / "tokenizer.json").unlink()
    elif how == "truncated-distcp":
        truncate(next(weights.glob("*.distcp")))
    elif how == "crafted-metadata":
        (weights / ".metadata").write_bytes(pickle.dumps(Exploit(tmp_path / "pwned")))
    elif how == "garbled-marker":
        (ckpt / "uniapl_model.json").write_text("{")


@pytest.mark.parametrize("how, pattern", [
    ("no-metadata", r"weights/\.metadata: missing .*is not a usable checkpoint"),
    ("no-tokenizer", r"hf/tokenizer\.json: missing; .* is not a complete checkpoint"),
    ("truncated-distcp", r"\.distcp: truncated \(\d+ bytes, the metadata needs \d+\)"),
    ("crafted-metadata", r"\.metadata: refused: .*open is not part of checkpoint metadata"),
    ("garbled-marker", r"uniapl_model\.json: unreadable"),
])
def test_export_of_a_damaged_checkpoint(imported, tmp_path, capsys, how, pattern):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(imported, ckpt)
    _damage(ckpt, how, tmp_path)
    run_tool(convert, ["export", "--mcore-dir", str(ckpt), "--out-dir", str(tmp_path / "hf")], capsys, pattern,
             "error: ", ckpt)
    assert not (tmp_path / "hf").exists() and not (tmp_path / "pwned").exists()


# ---- evaluation, analysis, IFEval scoring, demo generation ---------------------------------------

def test_eval_refuses_damaged_weights_before_starting_the_engine(tiny_tied, tmp_path, capsys):
    from megatron_uniapl.eval.run import main as eval_main

    hf = broken_hf(tiny_tied, tmp_path / "hf", "truncated")
    data = copy_data(tmp_path / "data")
    run_tool(eval_main, ["--model", str(hf), "--eval-file", str(data["eval"]), "--out", str(tmp_path / "out")],
             capsys, r"model\.safetensors: not a readable safetensors file", "eval: ", hf, tmp_path / "data")


@pytest.mark.parametrize("line, pattern", [
    (b"\x80abc", r"eval\.jsonl:4: not UTF-8 text \(byte 0x80 at column 1\)"),
    (b'{"key": 1, "prompt": "x"}', r"eval\.jsonl:4: instruction_id_list: missing"),
])
def test_eval_file_errors(tiny_tied, tmp_path, capsys, line, pattern):
    from megatron_uniapl.eval.run import main as eval_main

    data = copy_data(tmp_path / "data")
    edit_line(data["eval"], 4, line)
    run_tool(eval_main, ["--model", str(tiny_tied), "--eval-file", str(data["eval"]), "--out", str(tmp_path / "out")],
             capsys, pattern, "eval: ", tmp_path / "data")


def test_analyze_errors(tiny_tied, tmp_path, capsys):
    from megatron_uniapl.eval.analyze import main as analyze

    data = copy_data(tmp_path / "data")
    policy = tmp_path / "policy.jsonl"
    shutil.copy(data["demos"], policy)
    edit_line(policy, 9, b'{"prompt": "\xc3", "response": "x"}')
    run_tool(analyze, ["--policy", str(policy), "--expert", str(data["demos"]), "--out", str(tmp_path / "o")],
             capsys, r"policy\.jsonl:9: not UTF-8 text", "analyze: ", tmp_path / "data", policy)
    hf = broken_hf(tiny_tied, tmp_path / "hf", "truncated")
    run_tool(analyze, ["--policy", str(data["demos"]), "--expert", str(data["demos"]), "--out", str(tmp_path / "o"),
                       "--model", str(hf)], capsys, r"model\.safetensors: not a readable safetensors file", "analyze: ", hf)


def test_ifeval_scoring_errors(tmp_path, capsys):
    from megatron_uniapl.eval.ifeval import main as ifeval

    data = copy_data(tmp_path / "data")
    responses = tmp_path / "responses.jsonl"
    responses.write_bytes(b'{"prompt": "a", "response": "b"}\n{"prompt": "\xff"}\n')
    run_tool(ifeval, ["--prompts", str(data["eval"]), "--responses", str(responses)], capsys,
             r"responses\.jsonl:2: not UTF-8 text", "ifeval: ", responses)


def test_generate_demos_errors(tiny_tied, tmp_path, capsys):
    from megatron_uniapl.teacher.generate import main as generate

    data = copy_data(tmp_path / "data")
    edit_line(data["rl_prompts"], 11, b"\xfe")
    out = tmp_path / "demos.jsonl"
    run_tool(generate, ["--teacher", str(tiny_tied), "--prompts", str(data["rl_prompts"]), "--out", str(out)], capsys,
             r"rl_prompts\.jsonl:11: not UTF-8 text", "generate_demos: ", tmp_path / "data")
    shutil.copy(DATA_OK := ROOT / "recipes" / "data" / "toy_rl_prompts.jsonl", data["rl_prompts"])
    out.write_bytes(b'{"id": "a", "prompt": "x", "response": "y"}\n{"id": "\xe9"}\n')
    run_tool(generate, ["--teacher", str(tiny_tied), "--prompts", str(DATA_OK), "--out", str(out)], capsys,
             r"demos\.jsonl:2: not UTF-8 text", "generate_demos: ", out)


# ---- the Slurm pre-launch check -----------------------------------------------------------------

@pytest.mark.parametrize("world, overrides, pattern", [
    (1, ["optimizer.lr=.nan"], r"^error: optimizer\.lr: must be a finite number, got nan$"),
    (3, ["model.tensor_parallel=2"], r"3 ranks are not divisible by model\.tensor_parallel"),
    (4, ["model.tensor_parallel=4"], r"model\.tensor_parallel=4 does not divide the model's 2 key/value heads"),
    (3, ["model.pipeline_parallel=3"], r"does not divide the model's 2 layers"),
])
def test_launch_check(tiny_tied, tmp_path, capsys, monkeypatch, world, overrides, pattern):
    from megatron_uniapl.launch_check import main as launch_check

    monkeypatch.chdir(ROOT)
    run_tool(launch_check, ["--config", str(TINY_RECIPE), "--world", str(world), f"model.hf_dir={tiny_tied}",
                            f"logging.run_dir={tmp_path}/run", *overrides], capsys, pattern, "error: ", tiny_tied)
