"""Scalar rewards from constraint verdicts, for one response or a batch, serial or in a pool.

Reward modes (all in [0, 1]):
- `strict`: 1.0 if every constraint of the prompt is followed by the response as written
  (IFEval's prompt-level strict accuracy), else 0.0: the binary reward of the paper's GRPO;
- `strict_fraction`: the fraction of the prompt's constraints followed (instruction-level);
- `loose`, `loose_fraction`: the same over IFEval's loose variants (see `verify`).

Checking is pure-Python CPU work (regexes, Punkt, langdetect), a few hundred microseconds to a
few milliseconds per response, so a rollout batch of thousands of responses is worth spreading
over processes: `RewardPool` keeps warm workers for the whole run.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from typing import Protocol, Sequence, Union

from megatron_uniapl.config.reward import RewardMode
from megatron_uniapl.rewards import registry, text
from megatron_uniapl.rewards.registry import Constraint
from megatron_uniapl.rewards.verify import follow_list


class ConstrainedPrompt(Protocol):
    """Anything carrying validated constraints, e.g. `data.schemas.RLPrompt`."""

    constraints: list[Constraint]


PromptLike = Union[ConstrainedPrompt, Sequence[Constraint]]


def constraints_of(prompt: PromptLike) -> Sequence[Constraint]:
    """The constraints of a prompt record, or the argument itself when it is a list of them."""
    return prompt.constraints if hasattr(prompt, "constraints") else prompt


def reward_from_verdicts(verdicts: Sequence[bool], mode: RewardMode) -> float:
    """All-or-nothing or fraction of `verdicts` (an empty list scores 1.0: nothing was asked)."""
    if not verdicts:
        return 1.0
    if RewardMode(mode).fraction:
        return sum(verdicts) / len(verdicts)
    return 1.0 if all(verdicts) else 0.0


Judgement = tuple[float, list[bool]]
"""A response's reward and its per-constraint verdicts (in the prompt's constraint order)."""


def judge(prompt: PromptLike, response: str, mode: RewardMode | str = RewardMode.STRICT) -> Judgement:
    """The reward of one response to one prompt, with the verdicts it came from."""
    mode = RewardMode(mode)
    verdicts = follow_list(constraints_of(prompt), response, mode.loose)
    return reward_from_verdicts(verdicts, mode), verdicts


def score(prompt: PromptLike, response: str, mode: RewardMode | str = RewardMode.STRICT) -> float:
    """The reward of one response to one prompt."""
    return judge(prompt, response, mode)[0]


def judge_batch(prompts: Sequence[PromptLike], responses: Sequence[str],
                mode: RewardMode | str = RewardMode.STRICT) -> list[Judgement]:
    """`judge` of `responses[i]` to `prompts[i]`, in this process."""
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    return [judge(p, r, mode) for p, r in zip(prompts, responses)]


def score_batch(prompts: Sequence[PromptLike], responses: Sequence[str],
                mode: RewardMode | str = RewardMode.STRICT) -> list[float]:
    """Rewards of `responses[i]` to `prompts[i]`, in this process."""
    return [reward for reward, _ in judge_batch(prompts, responses, mode)]


def _judge_chunk(args: tuple[list[Sequence[Constraint]], list[str], str]) -> list[Judgement]:
    constraints, responses, mode = args
    return judge_batch(constraints, responses, mode)


def _warm_worker() -> None:
    # Pay the one-off costs (checker imports, Punkt model, language profiles) at start-up
    # rather than inside the first timed batch.
    registry.registered()
    text.count_sentences("Warm up. Done.")
    text.known_languages()


class RewardPool:
    """Worker processes that score batches; use as a context manager or call `close()`.

    Workers start with the `forkserver` method by default: forking a trainer process that
    already runs threads (torch, NCCL) is unsafe, while a fork server starts clean workers.
    Constraint types registered outside this package reach the workers because each
    `Constraint` pickles its checker by module and name.
    """

    def __init__(self, num_workers: int, start_method: str = "forkserver",
                 min_batch: int = 64, chunks_per_worker: int = 4):
        if num_workers < 1:
            raise ValueError(f"num_workers must be >= 1, got {num_workers}")
        self.num_workers = num_workers
        self.min_batch = min_batch
        self.chunks_per_worker = chunks_per_worker
        self._executor = ProcessPoolExecutor(
            num_workers, mp_context=multiprocessing.get_context(start_method),
            initializer=_warm_worker)
        # Start every worker now so that the first batch does not pay for it.
        list(self._executor.map(_noop, range(num_workers)))

    def score(self, prompts: Sequence[PromptLike], responses: Sequence[str],
              mode: RewardMode | str = RewardMode.STRICT) -> list[float]:
        """Like `score_batch`, spread over the workers (small batches stay in this process)."""
        return [reward for reward, _ in self.judge(prompts, responses, mode)]

    def judge(self, prompts: Sequence[PromptLike], responses: Sequence[str],
              mode: RewardMode | str = RewardMode.STRICT) -> list[Judgement]:
        """Like `judge_batch`, spread over the workers (small batches stay in this process)."""
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        mode = RewardMode(mode).value
        if len(prompts) < self.min_batch:
            return judge_batch(prompts, responses, mode)
        constraints = [list(constraints_of(p)) for p in prompts]
        n_chunks = min(len(prompts), self.num_workers * self.chunks_per_worker)
        bounds = [len(prompts) * i // n_chunks for i in range(n_chunks + 1)]
        chunks = [(constraints[a:b], list(responses[a:b]), mode)
                  for a, b in zip(bounds, bounds[1:])]
        return [judged for part in self._executor.map(_judge_chunk, chunks) for judged in part]

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> RewardPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _noop(_: int) -> None:
    return None
