"""The UniAPL training loop: one objective over mixed batches of demonstrations and rollouts.

    python -m megatron_uniapl.train --config recipes/tiny_cpu.yaml [section.field=value ...]
    torchrun --nproc-per-node 8 -m megatron_uniapl.train --config recipes/qwen3_4b.yaml

One step, as DESIGN.md draws it:
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

import torch
import torch.distributed as dist

from megatron_uniapl.data import stream
from megatron_uniapl.data.packing import pack_samples
from megatron_uniapl.data.sample import Sample
from megatron_uniapl.losses.adversarial import assign_advantages
from megatron_uniapl.parallel import launch_nodes
from megatron_uniapl.rewards.samples import score_samples
from megatron_uniapl.runtime import Runtime, build_runtime, save, shutdown

logger = logging.getLogger("megatron_uniapl.train")


def sample_demos(rt: Runtime, count: int) -> list[Sample]:
    d = rt.config.data
    encode = lambda demo: stream.encode_demonstration(  # noqa: E731
        rt.tokenizer, demo, d.max_prompt_tokens, d.max_response_tokens, d.overlong, rt.overlong)
    return stream.take_usable(rt.demo_stream, count, encode)


def sample_prompts(rt: Runtime, source: str, demos: list[Sample]) -> list[stream.EncodedPrompt]:
    if source == "demo":  # A-SFT: the policy answers the demonstrations' prompts
        return [stream.demo_as_prompt(s) for s in demos]
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
    samples = stream.rollout_samples(prompts, gens, group_offset=0)
    if rt.dp_size > 1:
        from megatron.core import parallel_state

        gathered = [None] * rt.dp_size
        dist.all_gather_object(gathered, samples, group=parallel_state.get_data_parallel_group())
        samples = sorted((s for part in gathered for s in part), key=lambda s: s.group_id)
    return samples


def score(rt: Runtime, rollouts: list[Sample]) -> None:
    score_samples(rollouts, rt.config.reward.mode)
    if rt.discriminator is not None and rollouts:
        missing = [i for i, s in enumerate(rollouts) if s.reference_text is None]
        if missing:
            raise ValueError(f"rollouts {missing[:5]} have no expert reference for the discriminator "
                             f"(add reference_response to the RL prompt file)")
        scores = rt.discriminator.score([s.prompt_text for s in rollouts], [s.reference_text for s in rollouts],
                                        [s.response_text for s in rollouts])
        for s, d in zip(rollouts, scores):
            s.disc_score = float(d)


def optimize(rt: Runtime, samples: list[Sample], weights) -> tuple:
    """Pack the mixed batch, recompute old (and reference) log-probs, take one optimizer step."""
    from megatron_uniapl.model.distributed import train_step
    from megatron_uniapl.objective import UniAPLLoss, attach_logprobs, rank_batches

    packed = pack_samples(samples, rt.config.train.micro_batch_tokens, rt.dp_size, pad_token_id=rt.tokenizer.pad_id)
    batches = rank_batches(packed, rt.dp_rank)
    if weights.mu < 1.0 or weights.lambda_adv > 0:
        attach_logprobs(rt.chunks, batches, "old_logprobs")
    if weights.beta > 0:
        attach_logprobs(rt.reference_chunks, batches, "ref_logprobs")
    loss = UniAPLLoss(weights, rt.objective.pg, packed.term_counts())
    result = train_step(rt.chunks, rt.optimizer, batches, loss, rt.scheduler)
    return result, batches, packed


def mismatch_metrics(batches: list[dict]) -> dict:
    """Engine vs trainer log-probs of the sampled tokens (before the update: the same weights)."""
    diffs = [(b["old_logprobs"] - b["rollout_logprobs"]).abs()[b["rollout_mask"] > 0]
             for b in batches if b.get("old_logprobs") is not None and b["rollout_mask"].any()]
    if not diffs:
        return {}
    d = torch.cat(diffs)
    return {"rollout/logprob_mismatch_mean": d.mean().item(), "rollout/logprob_mismatch_max": d.max().item()}


def mfu_metrics(rt: Runtime, batch: list[Sample], elapsed: float) -> dict:
    """Model TFLOP/s of the step's training tokens per GPU, and MFU against the GPU's bf16 peak.

    Counts the forward+backward of the training step only (not generation nor the log-prob
    recomputation), per sample at its own length; on a CPU only the TFLOP/s is reported."""
    from megatron_uniapl.bench.model import peak_tflops
    from megatron_uniapl.model.presets import training_flops_per_token

    flops = sum(training_flops_per_token(rt.arch, s.num_tokens) * s.num_tokens for s in batch)
    per_gpu = flops / elapsed / 1e12 / (dist.get_world_size() if dist.is_initialized() else 1)
    out = {"perf/model_tflops_per_gpu": per_gpu}
    peak = peak_tflops()
    if peak:
        out["perf/mfu"] = per_gpu / peak
    return out


def _from_last_stage(metrics: dict) -> dict:
    """Loss metrics exist on the last pipeline stage; rank 0 logs them."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return metrics
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, metrics)
    return next((m for m in reversed(gathered) if m), {})


def train(config) -> list[dict]:
    """Run (or resume) the configured training; returns the logged metrics of this invocation."""
    from megatron_uniapl.logging import MetricsLogger, Progress

    rt = build_runtime(config)
    log = MetricsLogger(config.logging.run_dir, resume_step=rt.step, config={"name": config.name},
                        wandb={"mode": config.logging.wandb_mode, "project": config.logging.wandb_project,
                               "entity": config.logging.wandb_entity, "name": config.name})
    progress = Progress(config.train.steps, initial=rt.step, enabled=config.logging.progress_bar)
    history = []
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
                score(rt, rollouts)
                assign_advantages(rollouts, weights, rt.objective.pg)
            batch = (demos if weights.mu > 0 else []) + rollouts
            result, batches, packed = optimize(rt, batch, weights)
            disc_metrics = {}
            if hasattr(rt.discriminator, "cotrain") and rollouts:
                disc_metrics = rt.discriminator.cotrain(
                    rt.step, [s.prompt_text for s in rollouts], [s.reference_text for s in rollouts],
                    [s.response_text for s in rollouts])

            rt.step += 1
            rt.nonfinite_in_a_row = rt.nonfinite_in_a_row + 1 if result.skipped else 0
            elapsed = time.perf_counter() - start
            metrics = {
                **_from_last_stage({**result.metrics, **mismatch_metrics(batches)}),
                **(rt.colocation.metrics if rollouts else {}), **disc_metrics,
                "objective/mu": weights.mu, "objective/lambda_adv": weights.lambda_adv,
                "optim/lr": result.learning_rate, "optim/grad_norm": result.grad_norm,
                "optim/skipped": float(result.skipped), "time/step_s": elapsed,
                "throughput/tokens_per_s": sum(s.num_tokens for s in batch) / elapsed,
                "gpus": world, "nodes": nodes,
            }
            metrics.update(mfu_metrics(rt, batch, elapsed))
            if rollouts:
                rewards = [s.rewards["task"] for s in rollouts]
                metrics["reward/task_mean"] = sum(rewards) / len(rewards)
                metrics["rollout/response_len_mean"] = sum(len(s.response_ids) for s in rollouts) / len(rollouts)
                if rt.discriminator is not None:
                    metrics["disc/score_mean"] = sum(s.disc_score for s in rollouts) / len(rollouts)
            if demos:
                metrics["demo/response_len_mean"] = sum(len(s.response_ids) for s in demos) / len(demos)
            history.append({"step": rt.step, **metrics})
            if rt.step % config.logging.log_every == 0 or rt.step == config.train.steps:
                log.log(rt.step, metrics)
            progress.update({k: metrics[k] for k in ("loss/total", "reward/task_mean") if metrics.get(k) is not None})
            if rt.nonfinite_in_a_row > config.train.max_nonfinite_steps:
                raise FloatingPointError(f"{rt.nonfinite_in_a_row} steps in a row had non-finite gradients; stopping")
            every = config.checkpoint.every  # 0 = only at the end
            if config.checkpoint.enabled and ((every and rt.step % every == 0) or rt.step == config.train.steps):
                save(rt)
    finally:
        progress.close()
        log.close()
        if rt.overlong.skipped or rt.overlong.truncated:
            logger.warning("overlong records: skipped %s, truncated %s", rt.overlong.skipped, rt.overlong.truncated)
        shutdown(rt)
    return history


def summarize(history: list[dict], window: int = 10) -> str:
    """Before/after table of this invocation: means over its first and last `window` steps."""
    keys = ("reward/task_mean", "disc/score_mean", "loss/sft", "rollout/response_len_mean")
    lines = []
    for key in keys:
        values = [(h["step"], h[key]) for h in history if h.get(key) is not None]
        if len(values) < 2:
            continue
        w = min(window, len(values) // 2)
        first = sum(v for _, v in values[:w]) / w
        last = sum(v for _, v in values[-w:]) / w
        lines.append(f"{key:28s} steps {values[0][0]:>4}-{values[w - 1][0]:<4} {first:8.3f}   ->   "
                     f"steps {values[-w][0]:>4}-{values[-1][0]:<4} {last:8.3f}")
    return "\n".join(lines) if lines else "nothing to summarize (no steps ran)"


def main(argv: list[str] | None = None) -> int:
    from megatron_uniapl.config import load_config, parse_args, save_resolved
    from megatron_uniapl.config_io import ConfigError
    from megatron_uniapl.logging import rank, setup_logging

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

    try:
        history = train(config)
    except (DataError, FileNotFoundError, CheckpointError, ConfigError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if rank() == 0:
        print(summarize(history))
    return 0


if __name__ == "__main__":
    sys.exit(main())
