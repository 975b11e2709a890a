"""The UniAPL training loop: one objective over mixed batches of demonstrations and rollouts.

    python -m megatron_uniapl.train --config recipes/tiny_cpu.yaml [section.field=value ...]
    torchrun --nproc-per-node 8 -m megatron_uniapl.train --config recipes/qwen3_4b.yaml

One step (docs/architecture.md draws it with the co-location phases):
    demos  <- demonstration stream                  (SFT term, and A-SFT prompts)
    gens   <- engine.generate(prompts) with the policy's current weights (co-located, synced)
    reward <- verifiable constraint checks;  score <- discriminator(prompt, reference, response)
    A      <- group-normalized task reward and discriminator score
    theta  <- one optimizer step on  mu*L_sft + (1-mu)*L_pg(A_task) + lambda_adv*L_pg(A_adv) + beta*KL
Then metrics, and a checkpoint on schedule. Variants (SFT, GRPO, CHORD, staged, ...) only change
the weights per step (`objective.weights_at`); SFT-only stages never start the engine.
"""

from __future__ import annotations

import logging
import sys
import time

import torch.distributed as dist

from megatron_uniapl.algorithm.advantages import assign_advantages
from megatron_uniapl.algorithm.loss import UniAPLLoss, attach_logprobs, rank_batches
from megatron_uniapl.algorithm.samples import demo_as_prompt, rollout_samples
from megatron_uniapl.algorithm.scoring import (
    cotrain_discriminator,
    score_samples,
    score_with_discriminator,
)
from megatron_uniapl.config import (
    ConfigError,
    RunConfig,
    load_config,
    parse_args,
    save_resolved,
)
from megatron_uniapl.config.objective import StepWeights
from megatron_uniapl.data import stream
from megatron_uniapl.data.packing import pack_samples
from megatron_uniapl.data.sample import Sample
from megatron_uniapl.metrics.reporter import StepReporter
from megatron_uniapl.metrics.sinks import rank, setup_logging
from megatron_uniapl.metrics.step import (
    StepOutcome,
    mismatch_metrics,
    step_metrics,
    summarize,
)
from megatron_uniapl.model.distributed import StepResult, train_step
from megatron_uniapl.parallel import launch_nodes
from megatron_uniapl.runtime import Runtime, build_runtime, save, shutdown

logger = logging.getLogger("megatron_uniapl.train")


def sample_demos(rt: Runtime, count: int) -> list[Sample]:
    d = rt.config.data
    encode = lambda demo: stream.encode_demonstration(  # noqa: E731
        rt.tokenizer, demo, d.max_prompt_tokens, d.max_response_tokens, d.overlong, rt.overlong)
    return stream.take_usable(rt.demo_stream, count, encode)


def sample_prompts(rt: Runtime, source: str, demos: list[Sample]) -> list[stream.EncodedPrompt]:
    if source == "demo":  # A-SFT: the policy answers the demonstrations' prompts
        return [demo_as_prompt(s) for s in demos]
    d = rt.config.data
    encode = lambda p: stream.encode_rl_prompt(rt.tokenizer, p, d.max_prompt_tokens, d.overlong, rt.overlong)  # noqa: E731
    return stream.take_usable(rt.rl_stream, d.prompts_per_step, encode)


def generate(rt: Runtime, prompts: list[stream.EncodedPrompt]) -> list[Sample]:
    """This data-parallel rank generates its share with the synced engine; all ranks get all."""
    mine = list(range(rt.dp_rank, len(prompts), rt.dp_size))
    sampling = rt.config.rollout.sampling_config(seed=rt.config.train.seed * 1_000_003 + rt.step)
    gens = rt.colocation.rollout(rt.weight_sync, [prompts[i].prompt_ids for i in mine], sampling)
    for g in gens:  # back to indices of the global prompt list
        g.prompt_index = mine[g.prompt_index]
    samples = rollout_samples(prompts, gens, group_offset=0)
    if rt.dp_size > 1:
        from megatron.core import parallel_state

        gathered = [None] * rt.dp_size
        dist.all_gather_object(gathered, samples, group=parallel_state.get_data_parallel_group())
        samples = sorted((s for part in gathered for s in part), key=lambda s: s.group_id)
    return samples


def optimize(rt: Runtime, samples: list[Sample], weights: StepWeights) -> StepResult:
    """Pack the mixed batch, recompute old (and reference) log-probs, take one optimizer step.

    The result's metrics carry the loss terms and the engine/trainer log-prob mismatch."""
    packed = pack_samples(samples, rt.config.train.micro_batch_tokens, rt.dp_size,
                          pad_to_multiple_of=rt.config.model.token_multiple, pad_token_id=rt.tokenizer.pad_id)
    batches = rank_batches(packed, rt.dp_rank)
    if weights.mu < 1.0 or weights.lambda_adv > 0:
        attach_logprobs(rt.chunks, batches, "old_logprobs")
    if weights.beta > 0:
        attach_logprobs(rt.reference_chunks, batches, "ref_logprobs")
    loss = UniAPLLoss(weights, rt.objective.pg, packed.term_counts())
    result = train_step(rt.chunks, rt.optimizer, batches, loss, rt.lr_schedule)
    result.metrics.update(mismatch_metrics(batches))
    return result


def train(config: RunConfig) -> list[dict]:
    """Run (or resume) the configured training; returns the metrics of this invocation's steps."""
    rt = build_runtime(config)
    report = StepReporter(config, resume_step=rt.step)
    world = dist.get_world_size()
    nodes = launch_nodes(world)
    try:
        while rt.step < config.train.steps:
            start = time.perf_counter()
            stage, _ = rt.objective.stage_at(rt.step)
            weights = rt.objective.weights_at(rt.step)
            needs_demos = weights.mu > 0 or stage.rollout_prompts == "demo"
            demos = sample_demos(rt, config.data.demos_per_step) if needs_demos else []
            rollouts: list[Sample] = []
            if stage.uses_rollouts:
                rollouts = generate(rt, sample_prompts(rt, stage.rollout_prompts, demos))
                score_samples(rollouts, config.reward.mode)
                if rt.discriminator is not None:
                    score_with_discriminator(rt.discriminator, rollouts)
                assign_advantages(rollouts, weights, rt.objective.pg)
            result = optimize(rt, (demos if weights.mu > 0 else []) + rollouts, weights)
            disc_metrics = cotrain_discriminator(rt.discriminator, rt.step, rollouts)

            rt.step += 1
            rt.nonfinite_in_a_row = rt.nonfinite_in_a_row + 1 if result.skipped else 0
            outcome = StepOutcome(weights, demos, rollouts, result, time.perf_counter() - start,
                                  phase_metrics=rt.colocation.metrics if rollouts else {},
                                  disc_metrics=disc_metrics, has_discriminator=rt.discriminator is not None)
            report.report(rt.step, step_metrics(outcome, rt.arch, world, nodes))
            if rt.nonfinite_in_a_row > config.train.max_nonfinite_steps:
                raise FloatingPointError(f"{rt.nonfinite_in_a_row} steps in a row had non-finite gradients; stopping")
            every = config.checkpoint.every  # 0 = only at the end
            if config.checkpoint.enabled and ((every and rt.step % every == 0) or rt.step == config.train.steps):
                save(rt)
    finally:
        report.close()
        if rt.overlong.skipped or rt.overlong.truncated:
            logger.warning("overlong records: skipped %s, truncated %s", rt.overlong.skipped, rt.overlong.truncated)
        shutdown(rt)
    return report.history


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    recipe, overrides = parse_args(argv, "train with UniAPL")
    try:
        config = load_config(recipe, overrides)
    except (ConfigError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if rank() == 0:
        save_resolved(config, config.logging.run_dir)
    from megatron_uniapl.checkpoint import CheckpointError
    from megatron_uniapl.data.jsonl import DataError
    from megatron_uniapl.device import DeviceError

    try:
        history = train(config)
    except (DataError, FileNotFoundError, CheckpointError, ConfigError, DeviceError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if rank() == 0:
        print(summarize(history))
    return 0


if __name__ == "__main__":
    sys.exit(main())
