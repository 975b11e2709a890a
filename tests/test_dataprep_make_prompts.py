"""tools/make_prompts.py on small instruction files: records the trainer reads, witnesses that
pass, drop counts by reason, a manifest with hashes, reruns that change nothing, refusals that
name the problem."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from megatron_uniapl.data.schemas import read_demonstrations, read_rl_prompts
from megatron_uniapl.data import manifest
from megatron_uniapl.dataprep import builder, decontam
from megatron_uniapl.dataprep.make_prompts import MakePromptsConfig, main, make_prompts
from megatron_uniapl.rewards.reward import score

ROOT = Path(__file__).resolve().parents[1]
REQUESTS = [
    "Describe the smell of rain on a summer evening.",
    "Explain how a bicycle gear works.",
    "Suggest three names for a bakery.",
    "Write a short note thanking a neighbour for help.",
    "describe the smell of RAIN on a summer evening.",  # a duplicate after normalization
    "What is the capital of France?",
    "Plan a weekend trip to the mountains for two friends on a small budget, with meals.",
]


@pytest.fixture
def source(tmp_path):
    path = tmp_path / "requests.jsonl"
    path.write_text("".join(json.dumps({"instruction": r}) + "\n" for r in REQUESTS))
    return path


@pytest.fixture
def eval_file(tmp_path):
    # "Explain how a bicycle gear works." is an eval request (longer, with constraint wording).
    path = tmp_path / "my_eval.jsonl"
    path.write_text(json.dumps({"key": "e1", "prompt": "Explain how a bicycle gear works. Answer with at least "
                                "100 words."}) + "\n")
    return path


def config(source, out, eval_file, **kw) -> MakePromptsConfig:
    return MakePromptsConfig([str(source)], out, eval_sets=[str(eval_file)], progress=False, **kw)


def test_prompts_witnesses_counts_and_manifest(source, eval_file, tmp_path):
    out = tmp_path / "data" / "prompts.jsonl"
    witnesses = tmp_path / "data" / "witness.jsonl"
    result = make_prompts(config(source, out, eval_file, per_instruction=2, witness_demos=witnesses,
                                 max_instruction_words=12))
    assert result["counts"] == {"instructions_read": 7, "duplicate": 1, "too_long": 1, "contaminated": 1,
                                "prompts": 8}  # 4 instructions x 2
    prompts = read_rl_prompts(out)
    demos = read_demonstrations(witnesses)
    assert len(prompts) == len(demos) == 8 and len({p.key for p in prompts}) == 8
    for prompt, demo in zip(prompts, demos):
        assert demo.id == prompt.key and demo.prompt == prompt.prompt
        assert score(prompt, demo.response, "strict") == 1.0
        assert 1 <= len(prompt.instruction_id_list) <= 3 and prompt.reference_response is None
    dropped = [json.loads(line) for line in (tmp_path / "data" / "prompts.jsonl.dropped.jsonl").open()]
    assert [d["reason"] for d in dropped] == ["contaminated", "duplicate", "too_long"]
    assert dropped[0]["eval_key"] == "e1" and dropped[0]["where"].endswith("requests.jsonl:2")
    assert result["decontamination"]["dropped_by_eval_set"] == {str(eval_file): 1}
    assert result["decontamination"]["eval_sets"][0]["sha256"] == manifest.sha256_file(eval_file)
    assert result["sources"][0]["sha256"] == manifest.sha256_file(source)
    assert result["outputs"]["prompts"] == manifest.file_entry(out, 8)
    assert sum(result["constraints_per_type"].values()) == sum(len(p.instruction_id_list) for p in prompts)
    assert sum(result["constraints_per_prompt"].values()) == 8
    assert json.loads(manifest.manifest_path(out).read_text()) == result


def test_same_seed_same_prompts_and_independent_instructions(source, eval_file, tmp_path):
    first = make_prompts(config(source, tmp_path / "a.jsonl", eval_file))
    assert first["counts"]["prompts"] == 5
    again = make_prompts(config(source, tmp_path / "b.jsonl", eval_file))
    assert (tmp_path / "a.jsonl").read_text() == (tmp_path / "b.jsonl").read_text()
    other_seed = make_prompts(config(source, tmp_path / "c.jsonl", eval_file, seed=1))
    assert (tmp_path / "c.jsonl").read_text() != (tmp_path / "a.jsonl").read_text()
    assert again["counts"] == other_seed["counts"] == first["counts"]
    # One instruction fewer leaves the other prompts exactly as they were.
    fewer = tmp_path / "fewer.jsonl"
    fewer.write_text("".join(json.dumps({"instruction": r}) + "\n" for r in REQUESTS if r != REQUESTS[2]))
    make_prompts(config(fewer, tmp_path / "d.jsonl", eval_file))
    a = [json.loads(x) for x in (tmp_path / "a.jsonl").open()]
    d = [json.loads(x) for x in (tmp_path / "d.jsonl").open()]
    assert d == a[:1] + a[2:]


def test_rerun_is_a_no_op_and_other_settings_are_refused(source, eval_file, tmp_path):
    out = tmp_path / "prompts.jsonl"
    make_prompts(config(source, out, eval_file))
    stamp = out.stat().st_mtime_ns
    make_prompts(config(source, out, eval_file))
    assert out.stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match="not made with these settings and inputs.*--overwrite"):
        make_prompts(config(source, out, eval_file, seed=3))
    make_prompts(config(source, out, eval_file, seed=3, overwrite=True))
    assert out.stat().st_mtime_ns != stamp
    # A file this tool did not write is never replaced silently.
    foreign = tmp_path / "foreign.jsonl"
    foreign.write_text("keep me\n")
    with pytest.raises(ValueError, match="not made with these settings"):
        make_prompts(config(source, foreign, eval_file))
    assert foreign.read_text() == "keep me\n"
    # A missing witness file is written again even though the prompts are current.
    witnesses = tmp_path / "w.jsonl"
    make_prompts(config(source, out, eval_file, seed=3, witness_demos=witnesses, overwrite=True))
    witnesses.unlink()
    make_prompts(config(source, out, eval_file, seed=3, witness_demos=witnesses))
    assert len(witnesses.read_text().splitlines()) == 5


def test_training_prompts_share_template_wording_but_not_instructions(tmp_path):
    # Whole prompts from the same templates overlap; their instructions do not.
    import random
    from collections import Counter

    def prompts_for(requests, seed):
        cfg = builder.BuilderConfig(min_constraints=2, max_constraints=3)
        return [builder.draw(r, random.Random(f"{seed}{r}"), cfg, Counter()).prompt for r in requests]

    train = ["Describe the smell of rain on a summer evening.", "Explain how a bicycle gear works at all."]
    held = ["Suggest three names for a new bakery in town.", "Write a short note thanking a neighbour for help."]
    eval_path = tmp_path / "held.jsonl"
    held_prompts = prompts_for(held, 1)
    eval_path.write_text("".join(json.dumps({"key": i, "prompt": p}) + "\n" for i, p in enumerate(held_prompts)))
    eval_set = decontam.read_eval_set("held", eval_path)
    index = decontam.EvalIndex([eval_set], decontam.DecontamConfig())
    assert [index.match(t) for t in train] == [None, None]
    whole = [decontam.ngrams(decontam.words(p), 6) for p in prompts_for(train, 2)]
    held_grams = [decontam.ngrams(decontam.words(p), 6) for _, p in eval_set.prompts]
    assert any(w & h for w in whole for h in held_grams)


def test_cli_errors_are_one_line_with_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "ok"}\n{"title": "no text"}\n')
    assert main(["--instructions", str(bad), "--out", str(tmp_path / "p.jsonl"), "--eval-set", "none"]) == 2
    assert capsys.readouterr().out.strip().endswith("bad.jsonl:2: instruction: missing (looked for instruction, "
                                                    "prompt, text, question)")
    assert main(["--instructions", str(bad), "--out", str(tmp_path / "p.jsonl"), "--types", "nope"]) == 2
    assert "--types: unknown constraint type 'nope'" in capsys.readouterr().out


def test_cli_writes_and_reports(tmp_path):
    plain = tmp_path / "requests.txt"
    plain.write_text("\n".join(REQUESTS[:3]) + "\n")
    out = tmp_path / "p.jsonl"
    run = subprocess.run([sys.executable, str(ROOT / "tools" / "make_prompts.py"), "--instructions", str(plain),
                          "--out", str(out), "--eval-set", "none", "--types", "startend:quotation,punctuation:no_comma",
                          "--max-constraints", "2", "--no-progress"], capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[0] == "instructions_read=3 prompts=3"
    ids = {i for p in read_rl_prompts(out) for i in p.instruction_id_list}
    assert ids <= {"startend:quotation", "punctuation:no_comma"}
