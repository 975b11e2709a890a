"""Engine generations -> rollout `Sample`s, grouped per prompt (the GRPO group).
"""

from __future__ import annotations

from collections.abc import Sequence

from megatron_uniapl.data.sample import CONSTRAINTS_KEY, FINISH_REASON_KEY, Sample, SampleKind
from megatron_uniapl.data.stream import EncodedPrompt


def demo_as_prompt(sample: Sample) -> EncodedPrompt:
    """A demonstration's prompt for A-SFT rollouts: its expert response is the reference."""
    return EncodedPrompt(list(sample.prompt_ids), sample.prompt_text or "", sample.response_text, [])


def rollout_samples(prompts: Sequence[EncodedPrompt], generations, group_offset: int) -> list[Sample]:
    """Rollout `Sample`s from engine generations; `group_id` = group_offset + prompt index."""
    out = []
    for gen in generations:
        p = prompts[gen.prompt_index]
        out.append(Sample(
            prompt_ids=list(p.prompt_ids), response_ids=list(gen.token_ids), kind=SampleKind.ROLLOUT,
            group_id=group_offset + gen.prompt_index, rollout_logprobs=list(gen.logprobs),
            prompt_text=p.prompt_text, response_text=gen.text, reference_text=p.reference_text,
            meta={CONSTRAINTS_KEY: p.constraints, FINISH_REASON_KEY: gen.finish_reason},
        ))
    return out
