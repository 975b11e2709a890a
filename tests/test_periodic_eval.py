"""Held-out evaluation during training (`eval.every`): its figures, and the settings it refuses."""

from __future__ import annotations

import pytest

from megatron_uniapl.config import load_config
from megatron_uniapl.config.yaml_io import ConfigError
from megatron_uniapl.data.schemas import read_eval_set
from megatron_uniapl.eval.periodic import encode_eval_prompts, eval_metrics
from megatron_uniapl.rollout.engine import Generation

EVAL = "recipes/data/toy_eval.jsonl"


def test_eval_metrics_are_ifeval_accuracies_of_the_greedy_responses():
    prompts = read_eval_set(EVAL)[:2]
    assert [p.instruction_id_list for p in prompts] == [("change_case:english_capital",),
                                                       ("startend:end_checker",)]
    responses = ["i like swimming", "Yellow. That is all."]  # the second follows its instruction
    gens = [Generation(i, [1] * (3 + i), [0.0] * (3 + i), text, "stop" if i == 0 else "length")
            for i, text in enumerate(responses)]
    assert eval_metrics(prompts, gens) == {
        "eval/prompt_strict": 0.5, "eval/instruction_strict": 0.5, "eval/prompt_loose": 0.5,
        "eval/instruction_loose": 0.5, "eval/truncated_frac": 0.5, "eval/response_len_mean": 3.5}


def test_eval_prompts_are_templated_like_rollouts_and_must_fit():
    from megatron_uniapl.assets import qwen3_tokenizer_dir
    from megatron_uniapl.tokenizer import load_tokenizer

    tok = load_tokenizer(qwen3_tokenizer_dir())
    prompts = read_eval_set(EVAL)[:3]
    ids = encode_eval_prompts(tok, prompts, max_tokens=8, max_model_len=512)
    assert ids[0] == tok.apply_chat([{"role": "user", "content": prompts[0].prompt}], thinking=False)
    with pytest.raises(ValueError, match=r"prompt 'sport-swimming-upper' of eval\.file: \d+ tokens \+ max_tokens 500"):
        encode_eval_prompts(tok, prompts, max_tokens=500, max_model_len=512)


@pytest.mark.parametrize(("overrides", "message"), [
    (["eval.every=2"], r"eval\.every is 2 but eval\.file is not set"),
    ([f"eval.file={EVAL}", "eval.every=-1"], r"eval\.every must be >= 0"),
    ([f"eval.file={EVAL}", "eval.every=1", "objective.variant=sft", "discriminator.kind=none"],
     r"eval\.every is 1 but no stage of objective 'sft' rolls out"),
    ([f"eval.file={EVAL}", "eval.every=1", "eval.max_tokens=5000"],
     r"data\.max_prompt_tokens \(64\) \+ eval\.max_tokens \(5000\) exceeds rollout\.engine\.max_model_len"),
])
def test_eval_settings_that_cannot_work_are_refused(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config("recipes/tiny_cpu.yaml", overrides)
