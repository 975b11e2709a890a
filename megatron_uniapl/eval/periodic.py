"""Held-out IFEval accuracy during training, through the co-located engine (`eval.every`).

Every N-th step the engine, synced with the weights the step just produced, answers the held-out
prompts greedily (one response each, the same templating as rollouts and `tools/eval.py`), and
the same checkers that reward training score them. The figures join that step's metrics row, so a
long run shows its accuracy move without stopping for `tools/eval.py`. The prompts are split over
the engines like rollout prompts; greedy decoding draws no random numbers, so a resumed run
evaluates to the same figures.
"""

from __future__ import annotations

from collections.abc import Sequence

from megatron_uniapl.config.rollout import SamplingConfig
from megatron_uniapl.data.schemas import EvalPrompt
from megatron_uniapl.eval.ifeval import evaluate
from megatron_uniapl.rollout import chat_generation as gen


def encode_eval_prompts(tokenizer, prompts: Sequence[EvalPrompt], max_tokens: int, max_model_len: int) -> list[list[int]]:
    """The prompts' token ids as the policy sees them; ValueError naming the first prompt that
    leaves no room for `max_tokens` within `max_model_len`."""
    ids = gen.encode_chats(tokenizer, [[{"role": "user", "content": p.prompt}] for p in prompts])
    gen.check_lengths(ids, [f"{p.key!r} of eval.file" for p in prompts], max_tokens, max_model_len)
    return ids


def eval_metrics(prompts: Sequence[EvalPrompt], generations: Sequence) -> dict[str, float]:
    """`eval/*` of one response per prompt (`generations` in prompt order): the four IFEval
    accuracies, the share of responses cut at max_tokens and their mean length in tokens."""
    report = evaluate(prompts, [g.text for g in generations])
    return {
        "eval/prompt_strict": report.prompt_strict,
        "eval/instruction_strict": report.instruction_strict,
        "eval/prompt_loose": report.prompt_loose,
        "eval/instruction_loose": report.instruction_loose,
        "eval/truncated_frac": sum(g.finish_reason == "length" for g in generations) / len(generations),
        "eval/response_len_mean": sum(len(g.token_ids) for g in generations) / len(generations),
    }


def run_eval(rt, prompt_ids: list[list[int]], prompts: Sequence[EvalPrompt], max_tokens: int) -> dict[str, float]:
    """Collective: every engine answers its share of the prompts with the trainer's current
    weights; every rank returns the same metrics."""
    sampling = SamplingConfig(n=1, temperature=0.0, max_tokens=max_tokens)
    generations = rt.engine_groups.generate(rt.colocation, rt.weight_sync, prompt_ids, sampling,
                                            rt.config.train.seed, rt.step)
    if len(generations) != len(prompts):
        raise RuntimeError(f"{len(generations)} responses for {len(prompts)} eval prompts")
    return eval_metrics(prompts, generations)
