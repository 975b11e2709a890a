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
from megatron_uniapl.algorithm.dynamic_sampling import select_groups
from megatron_uniapl.algorithm.minibatches import combine_updates, split_minibatches
from megatron_uniapl.algorithm.samples import demo_as_prompt, rollout_samples
from megatron_uniapl.algorithm.scoring import cotrain_discriminator
from megatron_uniapl.algorithm.sharded_scoring import score_rollouts
from megatron_uniapl.config import (
    RunConfig,
    load_config,
    parse_args,
    save_resolved,
)
from megatron_uniapl.config.objective import StepWeights
from megatron_uniapl.data import stream
from megatron_uniapl.data.packing import pack_samples
from megatron_uniapl.data.sample import Sample
from megatron_uniapl.eval.periodic import run_eval
from megatron_uniapl.metrics.reporter import StepReporter
from megatron_uniapl.metrics.sinks import rank, setup_logging
from megatron_uniapl.metrics.step import (
    StepOutcome,
    mismatch_metrics,
    step_metrics,
    summarize,
)
from megatron_uniapl.metrics.timing import timed, with_checkpoint_time
from megatron_uniapl.model.distributed import StepResult, train_step
from megatron_uniapl.parallel import launch_nodes
from megatron_uniapl.nonfinite import check_streak, count_step, save_unless_in_streak
from megatron_uniapl.outcome import RunFailed
from megatron_uniapl.runtime import Runtime, begin_step, build_runtime, save, shutdown
from megatron_uniapl.stop import StopRequest, StopRequested, stop_if_requested

logger = logging.getLogger("megatron_uniapl.train")


def sample_demos(rt: Runtime, count: int) -> list[Sample]:
    d = rt.config.data
    encode = lambda demo: stream.encode_demonstration(  # noqa: E731
        rt.tokenizer, demo, d.max_prompt_tokens, d.max_response_tokens, d.overlong, rt.overlong)
    return stream.take_usable(rt.demo_stream, count, encode)


def sample_prompts(rt: Runtime, source: str, demos: list[Sample], count: int) -> list[stream.EncodedPrompt]:
    if source == "demo":  # A-SFT: the policy answers the demonstrations' prompts
        return [demo_as_prompt(s) for s in demos]
    d = rt.config.data
    encode = lambda p: stream.encode_rl_prompt(rt.tokenizer, p, d.max_prompt_tokens, d.overlong, rt.overlong)  # noqa: E731
    return stream.take_usable(rt.rl_stream, count, encode)


def dynamic_extra(config: RunConfig, source: str, weights: StepWeights) -> int:
    """Extra RL prompts to roll out this step for dynamic sampling (only with a task term)."""
    return config.rollout.dynamic_sampling_prompts if source == "rl" and weights.mu < 1.0 else 0


def generate(rt: Runtime, prompts: list[stream.EncodedPrompt]) -> list[Sample]:
    """Each co-located engine generates its share of the prompts with the synced weights; all
    ranks get all (rollout/engine_layout.py), seeded by step and prompt (rollout/seeds.py)."""
    gens = rt.engine_groups.generate(rt.colocation, rt.weight_sync, [p.prompt_ids for p in prompts],
                                     rt.config.rollout.sampling_config(), rt.config.train.seed, rt.step)
    return rollout_samples(prompts, gens, group_offset=0)


def score(rt: Runtime, rollouts: list[Sample], times: dict[str, float]) -> None:
    """Task rewards and discriminator scores, each rank computing a share (algorithm/sharded_scoring.py)."""
    collective = rt.config.model.tensor_parallel if rt.config.discriminator.kind == "cotrained" else 1
    score_rollouts(rollouts, rt.config.reward.mode, rt.discriminator, rt.reward_pool, collective_ranks=collective,
                   times=times)


def optimize(rt: Runtime, samples: list[Sample], weights: StepWeights, times: dict[str, float]) -> StepResult:
    """Pack the mixed batch, recompute old (and reference) log-probs, take the step's optimizer
    updates (`train.mini_batches` x `train.epochs`, algorithm/minibatches.py).

    The result's metrics carry the loss terms (averaged over the updates) and the engine/trainer
    log-prob mismatch; `times` gets the log-prob recomputations' and the training pass's seconds."""
    begin_step(rt)  # first: a refreshed reference must score this step's rollouts
    train_cfg = rt.config.train
    packed = [pack_samples(part, train_cfg.micro_batch_tokens, rt.dp_size, pad_to_multiple_of=rt.config.model.token_multiple,
                           pad_token_id=rt.tokenizer.pad_id)
              for part in split_minibatches(samples, train_cfg.mini_batches)]
    batches = [rank_batches(p, rt.dp_rank) for p in packed]
    # Rollout tokens are scored at the temperature they were sampled at (algorithm/loss.py).
    temperature = rt.config.rollout.sampling.temperature
    # pi_old and the reference are fixed for the whole step: computed before the first update.
    if weights.mu < 1.0 or weights.lambda_adv > 0:
        with timed(times, "old_logprobs"):
            for b in batches:
                attach_logprobs(rt.chunks, b, "old_logprobs", temperature)
    if weights.beta > 0:
        with timed(times, "ref_logprobs"):
            for b in batches:
                attach_logprobs(rt.reference_chunks, b, "ref_logprobs", temperature)
    results = []
    with timed(times, "train"):
        for _ in range(train_cfg.epochs):
            for p, b in zip(packed, batches):
                loss = UniAPLLoss(weights, rt.objective.pg, p.term_counts(), rollout_temperature=temperature)
                results.append(train_step(rt.chunks, rt.optimizer, b, loss, rt.lr_schedule))
    result = results[0] if len(results) == 1 else combine_updates(results)
    result.metrics.update(mismatch_metrics([mb for b in batches for mb in b]))
    return result


def train(config: RunConfig, plan=None, stop_request: StopRequest | None = None) -> list[dict]:
    """Run (or resume) the configured training; returns the metrics of this invocation's steps.
    `plan`: the pre-flight result (`preflight.check_run`); `stop_request`: the signal catcher."""
    from megatron_uniapl.checkpoint import CheckpointError, latest_checkpoint
    from megatron_uniapl.data.jsonl import DataError

    rt = build_runtime(config, plan)
    if rank() == 0:  # only now: the file describes a run that started
        save_resolved(config, config.logging.run_dir)
    stop_request, saved_at = stop_request or StopRequest(), rt.step
    report = StepReporter(config, resume_step=rt.step)
    world = dist.get_world_size()
    nodes = launch_nodes(world)
    try:
        while rt.step < config.train.steps:
            stop_if_requested(stop_request, rt, saved_at, save)
            start = time.perf_counter()
            stage, _ = rt.objective.stage_at(rt.step)
            weights = rt.objective.weights_at(rt.step)
            needs_demos = weights.mu > 0 or stage.rollout_prompts == "demo"
            times: dict[str, float] = {}  # time/<phase>_s of the loop's own phases (metrics/timing.py)
            rollouts: list[Sample] = []
            with timed(times, "data"):
                demos = sample_demos(rt, config.data.demos_per_step) if needs_demos else []
                extra = dynamic_extra(config, stage.rollout_prompts, weights)
                prompts = (sample_prompts(rt, stage.rollout_prompts, demos, config.data.prompts_per_step + extra)
                           if stage.uses_rollouts else [])
            sampling_metrics: dict[str, float] = {}
            if stage.uses_rollouts:
                rollouts = generate(rt, prompts)
                score(rt, rollouts, times)
                if extra:
                    rollouts, sampling_metrics = select_groups(rollouts, config.data.prompts_per_step)
                assign_advantages(rollouts, weights, rt.objective.pg)
            result = optimize(rt, (demos if weights.mu > 0 else []) + rollouts, weights, times)
            disc_metrics: dict[str, float] = {}
            if rt.discriminator is not None and rollouts:
                with timed(times, "disc_update"):  # only a co-trained one has work here
                    disc_metrics = cotrain_discriminator(rt.discriminator, rt.step, rollouts)

            rt.step += 1
            count_step(rt.loop, result.skipped, rt.chunks)
            round_metrics = dict(rt.colocation.metrics) if rollouts else {}  # before eval's round
            eval_result: dict[str, float] = {}
            if config.eval.every and rt.step % config.eval.every == 0:
                with timed(times, "eval"):
                    eval_result = run_eval(rt, rt.eval_prompt_ids, rt.eval_prompts, config.eval_max_tokens)
            phases = {**round_metrics, **times}
            outcome = StepOutcome(weights, demos, rollouts, result, time.perf_counter() - start,
                                  phase_metrics=phases, disc_metrics=disc_metrics, sampling_metrics=sampling_metrics,
                                  has_discriminator=rt.discriminator is not None)
            metrics = {**step_metrics(outcome, rt.arch, world, nodes), **eval_result}
            try:
                check_streak(rt.loop, config.train.max_nonfinite_steps,
                             lambda: latest_checkpoint(config.checkpoint_dir))
                every = config.checkpoint.every  # 0 = only at the end
                due = (every and rt.step % every == 0) or rt.step == config.train.steps
                saving = time.perf_counter()
                if config.checkpoint.enabled and due and save_unless_in_streak(rt, save):
                    saved_at = rt.step
                    metrics = with_checkpoint_time(metrics, time.perf_counter() - saving)
            finally:
                # The row is written after the save so that it can hold the save's time; also
                # when the streak check or the save fails (writing it is local to rank 0).
                report.report(rt.step, metrics)
    except (CheckpointError, DataError) as err:  # e.g. a save on a disk that filled up
        raise RunFailed(str(err)) from None
    finally:
        report.close()
        if rt.overlong.skipped or rt.overlong.truncated:
            logger.warning("overlong records: skipped %s, truncated %s", rt.overlong.skipped, rt.overlong.truncated)
        shutdown(rt)
    return report.history


def main(argv: list[str] | None = None) -> int:
    """Exit status: 0 done, 2 bad input (nothing started), 1 a started run failed (named in one
    line), 75 stopped on request after saving (`outcome.py`)."""
    from megatron_uniapl import outcome, preflight
    from megatron_uniapl.metrics.sinks import add_run_log

    setup_logging()
    recipe, overrides = parse_args(argv, "train with UniAPL")
    config, started = None, False
    with StopRequest() as stop_request:
        try:
            config = load_config(recipe, overrides)
            plan = preflight.check_run(config)
            if preflight.is_complete(config, plan):
                return outcome.report_complete(config, plan.resume_step, summarize)
            add_run_log(config.logging.run_dir)
            started = True
            history = train(config, plan, stop_request)
        except StopRequested as stopped:
            return outcome.stopped(stopped)
        except RunFailed as err:
            return outcome.failed(config, err, 1, every_rank=True)
        except outcome.user_errors() as err:
            return outcome.failed(config, err, 2, every_rank=started)
        except KeyboardInterrupt:
            return outcome.interrupted()
    if rank() == 0:
        print(summarize(history))
    return outcome.finished(config)


if __name__ == "__main__":
    sys.exit(main())
