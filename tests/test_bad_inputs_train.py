"""Bad input to the trainer, through its real entry point `train.main()` (in-process): every case
exits with status 2 and one `error:` line naming the file, line or field, with no traceback, and
leaves the run directory, the data and the model exactly as they were. Each class has one
subprocess twin in test_bad_inputs_cli.py."""

from __future__ import annotations

import json

import pytest
from bad_input_utils import (
    SMALL,
    TINY_RECIPE,
    assert_clean_error,
    copy_data,
    edit_line,
    own_record_removed,
    snapshot,
)

from megatron_uniapl.train import main as train_main


@pytest.fixture
def case(tiny_tied, tmp_path, capsys):
    """Runs `train.main` with the small tiny recipe plus overrides; checks the outcome."""
    data = copy_data(tmp_path / "data")
    run_dir = tmp_path / "run"
    base = [f"model.hf_dir={tiny_tied}", f"logging.run_dir={run_dir}", f"data.demo_file={data['demos']}",
            f"data.rl_prompt_file={data['rl_prompts']}", *SMALL]

    class Case:
        def __init__(self):
            self.data, self.run_dir, self.hf_dir = data, run_dir, tiny_tied

        def fails(self, overrides, pattern, recipe=TINY_RECIPE, status=2):
            before = snapshot(tmp_path, tiny_tied)
            rc = train_main(["--config", str(recipe), *base, *overrides])
            captured = capsys.readouterr()
            assert rc == status, captured.err[-3000:]
            line = assert_clean_error(captured.err, pattern)
            # The attempt's own record (train.log, run_status.json) may be written; nothing else.
            assert own_record_removed(snapshot(tmp_path, tiny_tied)) == own_record_removed(before), \
                "a failed start changed or deleted files"
            status_file = run_dir / "run_status.json"
            if status_file.is_file():
                recorded = json.loads(status_file.read_text())
                assert recorded["exit_code"] == status and recorded["message"] in line
            return line

        def config(self):
            from megatron_uniapl.config import load_config

            return load_config(TINY_RECIPE, base)

    return Case()


# ---- configuration and layout: found before any process group -------------------------------

@pytest.mark.parametrize("override, pattern", [
    ("optimizer.lrr=1", r"optimizer\.lrr.*did you mean 'lr'"),
    ("train.steps=abc", r"train\.steps"),
    ("optimizer.lr=.nan", r"^error: optimizer\.lr: must be a finite number, got nan$"),
    ("objective.mu=.inf", r"^error: objective\.mu: must be a finite number, got inf$"),
    ("optimizer.betas=[0.9, .nan]", r"optimizer\.betas\.1: must be a finite number"),
    ("data.prompts_per_step=0", r"data\.prompts_per_step must be >= 1"),
])
def test_config_values(case, override, pattern):
    case.fails([override], pattern)


@pytest.mark.parametrize("world, overrides, pattern", [
    (3, ["model.tensor_parallel=2"], r"3 ranks are not divisible by model\.tensor_parallel x pipeline_parallel"),
    (3, ["model.tensor_parallel=3"], r"model\.tensor_parallel=3 does not divide the model's 4 attention heads \(.*config\.json\)"),
    (4, ["model.tensor_parallel=4"], r"model\.tensor_parallel=4 does not divide the model's 2 key/value heads"),
    (3, ["model.pipeline_parallel=3"], r"pipeline_parallel x virtual_pipeline_stages = 3 does not divide the model's 2 layers"),
    (2, ["rollout.engine.tensor_parallel_size=3", "rollout.engine.distributed_executor_backend=external_launcher"],
     r"rollout\.engine\.tensor_parallel_size=3 does not divide plan\.gpus_per_node=1: an engine would span nodes"),
    (2, ["plan.gpus_per_node=4", "rollout.engine.tensor_parallel_size=4",
         "rollout.engine.distributed_executor_backend=external_launcher"],
     r"2 ranks are not divisible by rollout\.engine\.tensor_parallel_size=4"),
])
def test_layout_is_checked_with_the_config(case, monkeypatch, world, overrides, pattern):
    monkeypatch.setenv("WORLD_SIZE", str(world))  # as torchrun sets it; no process group is created
    case.fails(overrides, pattern)


def test_recipe_files(case, tmp_path):
    case.fails([], r"nope\.yaml: recipe file not found", recipe=tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  steps: [1\n")
    case.fails([], r"bad\.yaml, line \d+: not valid YAML", recipe=bad)


# ---- data: every record validated at load, file:line: field -----------------------------------

def test_non_utf8_bytes_name_file_line_and_column(case):
    edit_line(case.data["demos"], 7, b'{"prompt": "caf\xe9", "response": "x"}')
    case.fails([], r"demos\.jsonl:7: not UTF-8 text \(byte 0xe9 at column 16\)")
    edit_line(case.data["demos"], 7, b'{"prompt": "ok", "response": "x"}')
    edit_line(case.data["rl_prompts"], 3, b"\xff\xfe")
    case.fails([], r"rl_prompts\.jsonl:3: not UTF-8 text \(byte 0xff at column 1\)")


@pytest.mark.parametrize("line, pattern", [
    (b'{"prompt": "x", "response": ', r"demos\.jsonl:5: invalid JSON"),
    (b'{"prompt": "x"}', r"demos\.jsonl:5: response: missing"),
    (b'{"prompt": "x", "respons": "y"}', r"demos\.jsonl:5: response: missing"),
    (b'{"prompt": "x", "response": "y", "idd": 1}', r"demos\.jsonl:5: idd: unknown field"),
    (b'["x"]', r"demos\.jsonl:5: expected a JSON object, got list"),
])
def test_bad_demonstration_records(case, line, pattern):
    edit_line(case.data["demos"], 5, line)
    case.fails([], pattern)


def test_rl_prompt_without_reference_is_found_at_load(case):
    """A discriminator needs every RL prompt's expert reference: found before any step, with the
    line, not at the step that happens to draw the prompt."""
    record = json.loads(case.data["rl_prompts"].read_text().splitlines()[61])
    del record["reference_response"]
    edit_line(case.data["rl_prompts"], 62, json.dumps(record).encode())
    case.fails([], r"rl_prompts\.jsonl:62: reference_response: missing; discriminator\.kind=overlap scores "
                   r"every RL rollout against the expert reference")
    # Without a discriminator the reference is optional.
    case.fails(["objective.variant=grpo", "discriminator.kind=none", "data.rl_prompt_file=/nonexistent.jsonl"],
               r"/nonexistent\.jsonl: no such file")


def test_bad_rl_prompt_records(case):
    edit_line(case.data["rl_prompts"], 2, b'{"prompt": "x", "instruction_id_list": ["no:such"], "reference_response": "y"}')
    case.fails([], r"rl_prompts\.jsonl:2: .*no:such")
    case.data["rl_prompts"].write_text("")
    case.fails([], r"rl_prompts\.jsonl: no records")


def test_every_record_overlong_is_found_before_the_first_step(case, megatron_world):
    case.fails(["data.max_prompt_tokens=8"], r"demos\.jsonl: all 92 records are longer than "
                                              r"data\.max_prompt_tokens=8 or data\.max_response_tokens=48")
    case.fails(["data.max_prompt_tokens=8", "objective.variant=grpo", "discriminator.kind=none"],
               r"rl_prompts\.jsonl: all 92 records are longer than data\.max_prompt_tokens=8 and "
               r"data\.overlong=skip skips them")


# ---- checkpoints: compatibility read from the marker, before any weights -----------------------

def write_checkpoint(case, step=2, edit=lambda meta: None, state=None):
    """A checkpoint directory as the trainer writes it, minus the weights (never read here)."""
    from megatron_uniapl.checkpoint import layout, resume
    from megatron_uniapl.model.hf_config import load_qwen3_arch

    config = case.config()
    meta = resume.marker_meta(config, load_qwen3_arch(case.hf_dir))
    edit(meta)
    path = case.run_dir / "checkpoints" / layout.iteration_name(step)
    (path / "weights").mkdir(parents=True)
    (path / layout.MARKER).write_text(json.dumps({"format": layout.FORMAT, "step": step, "world_size": 1, **meta}))
    state = state or {"demo_stream": {"epoch": 0, "cursor": 4, "size": 92}, "rl_stream": {"epoch": 0, "cursor": 4, "size": 92}}
    (path / layout.STATE_FILE).write_text(json.dumps(state))
    layout.write_latest(path.parent, path.name)
    (case.run_dir / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "loss/sft": 10.0 - s}) + "\n"
                                                        for s in range(1, step + 1)))
    (case.run_dir / "resolved_config.yaml").write_text("# the run that wrote the checkpoint\n")
    return path


def test_resume_with_another_model_size(case):
    write_checkpoint(case, edit=lambda m: m["model"].update(hidden_size=128, num_layers=4))
    case.fails([], r"iter_0000002 holds another model than model\.hf_dir=.*\(hidden_size=128 in the checkpoint, 64 now")


def test_resume_with_changed_optimizer_settings(case):
    write_checkpoint(case)
    line = case.fails(["optimizer.weight_decay=0.1"], r"iter_0000002 was saved with other optimizer settings "
                                                       r"\(optimizer\.weight_decay=0\.0 in the checkpoint, 0\.1 now\)")
    assert "model.init_checkpoint=" in line


def test_resume_refusals(case, tmp_path):
    ckpt = write_checkpoint(case)
    case.fails(["checkpoint.resume=none"], r"checkpoint\.resume=none but .*checkpoints already holds checkpoints")
    case.fails([f"checkpoint.resume={tmp_path}/elsewhere"], r"checkpoint\.resume=.*elsewhere: not a complete training checkpoint")
    marker = json.loads((ckpt / "uniapl_train.json").read_text())
    (ckpt / "uniapl_train.json").write_text(json.dumps({**marker, "format": "megatron_uniapl.train/1"}))
    case.fails([], r"iter_0000002: written by an older version that stored pickled state")


def test_resume_with_a_data_file_of_another_size(case):
    write_checkpoint(case)
    lines = case.data["demos"].read_text().splitlines()
    case.data["demos"].write_text("\n".join(lines[:-2]) + "\n")
    case.fails([], r"demos\.jsonl has 90 records, but .*iter_0000002 was taken with 92")


def test_bad_eval_file_records(case, tmp_path):
    bad = tmp_path / "held_out.jsonl"
    bad.write_text('{"key": 1, "prompt": "Say hi.", "instruction_id_list": ["change_case:english_capital"], "kwargs": [{}]}\n'
                   '{"key": 2, "prompt": "Say hi.", "instruction_id_list": ["no:such"], "kwargs": [{}]}\n')
    case.fails([f"eval.file={bad}", "eval.every=1"], r"held_out\.jsonl:2: .*no:such")


def test_resume_with_another_data_order_seed(case):
    stream = {"epoch": 0, "cursor": 4, "size": 92, "seed": 0}
    write_checkpoint(case, state={"demo_stream": stream, "rl_stream": {**stream, "seed": 1}})
    case.fails(["train.seed=3"], r"demos\.jsonl: .*iter_0000002 was taken with data order seed 0, this run has 3 "
                                 r"\(train\.seed, or data\.shuffle_seed when set\)")


def test_a_tiny_model_created_with_another_seed(case, tmp_path):
    import shutil

    from megatron_uniapl.model.tiny import record_run_seed

    model = tmp_path / "tiny_model"
    shutil.copytree(case.hf_dir, model)
    record_run_seed(model, 0)
    case.fails([f"model.hf_dir={model}", "model.create_tiny=true", "train.seed=1"],
               r"model\.hf_dir=.*tiny_model holds a tiny model drawn with seed 0 \(model\.create_tiny\), but "
               r"train\.seed is 1")


def test_unwritable_checkpoint_dir(case, tmp_path):
    (tmp_path / "a_file").write_text("x")
    case.fails([f"checkpoint.dir={tmp_path}/a_file/ckpt"], r"checkpoint\.dir=.*a_file/ckpt: cannot write there")


def test_rerun_of_a_complete_run_starts_nothing(case, capsys):
    write_checkpoint(case, step=4)
    before = snapshot(case.run_dir)
    assert train_main(["--config", str(TINY_RECIPE), f"model.hf_dir={case.hf_dir}", f"logging.run_dir={case.run_dir}",
                       f"data.demo_file={case.data['demos']}", f"data.rl_prompt_file={case.data['rl_prompts']}",
                       *SMALL]) == 0
    out = capsys.readouterr()
    assert "the run is complete (step 4 of 4" in out.out and "loss/sft" in out.out
    assert "Traceback" not in out.err and "vllm" not in out.err.lower()
    assert snapshot(case.run_dir) == before
