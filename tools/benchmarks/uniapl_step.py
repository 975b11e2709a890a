"""Training time of a UniAPL step vs a GRPO-only step on the same rollouts, on Megatron-Core.

Both steps run the whole Megatron glue on the tiny random Qwen3 (`model.tiny`), in this process
(TP = PP = DP = 1, CPU or one GPU): pack, recompute old log-probs (forward only), one
`train_step` (forward/backward through Megatron's schedule, DDP, Megatron's Adam). The UniAPL
step adds demonstrations with as many response tokens as the rollouts (1:1, the issue's setting),
the adversarial term, and one update of a co-trained Megatron-backbone discriminator on expert vs
policy responses. Each phase is timed (best of --repeats rounds, the two steps taking turns) and
the ratio UniAPL / GRPO is printed per phase and in total.

What to expect: training cost is linear in trained tokens, and the demonstrations double them, so
the train phase alone is ~2x; only old-log-prob recomputation (rollouts only, shared) and what
the step does not include (generation, rewards) dilute it.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time

import torch

from megatron_uniapl.data.sample import Sample, SampleKind


def _rollouts(args, rng: random.Random) -> list[Sample]:
    out = []
    for g in range(args.prompts):
        prompt = [rng.randrange(3000) for _ in range(args.prompt_len)]
        for i in range(args.group):
            n = args.response_len
            out.append(
                Sample(
                    prompt,
                    [rng.randrange(3000) for _ in range(n)],
                    SampleKind.ROLLOUT,
                    group_id=g,
                    rollout_logprobs=[-rng.uniform(5.0, 15.0) for _ in range(n)],
                    rewards={"task": float((i + g) % 2)},
                    disc_score=rng.gauss(0.0, 1.0),
                )
            )
    return out


def _demos(args, rng: random.Random) -> list[Sample]:
    # One demonstration per rollout response: 1:1 response tokens with the rollouts.
    return [
        Sample(
            [rng.randrange(3000) for _ in range(args.prompt_len)],
            [rng.randrange(3000) for _ in range(args.response_len)],
            SampleKind.DEMO,
        )
        for _ in range(args.prompts * args.group)
    ]


def _step_fn(chunks, optimizer, samples, objective, budget, disc=None):
    from megatron_uniapl.algorithm.advantages import assign_advantages
    from megatron_uniapl.algorithm.loss import UniAPLLoss, attach_logprobs, rank_batches
    from megatron_uniapl.data.packing import pack_samples
    from megatron_uniapl.model.distributed import train_step

    weights = objective.weights_at(0)
    assign_advantages(samples, weights, objective.pg)

    def run() -> dict[str, float]:
        times = {}
        t = time.perf_counter()
        packed = pack_samples(samples, budget)
        batches = rank_batches(packed, 0)
        attach_logprobs(chunks, batches, "old_logprobs")
        times["logprobs"] = time.perf_counter() - t
        t = time.perf_counter()
        train_step(
            chunks,
            optimizer,
            batches,
            UniAPLLoss(weights, objective.pg, packed.term_counts(), with_entropy=False),
        )
        times["train"] = time.perf_counter() - t
        if disc is not None:
            t = time.perf_counter()
            disc_module, expert, policy = disc
            disc_module.update(*expert, *policy)
            times["disc"] = time.perf_counter() - t
        return times

    return run


def _padded(samples: list[Sample]) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(s.num_tokens for s in samples)
    ids = torch.zeros(len(samples), width, dtype=torch.long)
    mask = torch.zeros(len(samples), width, dtype=torch.long)
    for i, s in enumerate(samples):
        seq = s.prompt_ids + s.response_ids
        ids[i, : len(seq)] = torch.tensor(seq)
        mask[i, : len(seq)] = 1
    return ids, mask


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=2, help="RL prompts per step")
    parser.add_argument("--group", type=int, default=4, help="responses per prompt (G)")
    parser.add_argument("--prompt-len", type=int, default=16)
    parser.add_argument("--response-len", type=int, default=48)
    parser.add_argument("--budget", type=int, default=256, help="tokens per micro-batch")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    from megatron_uniapl import parallel
    from megatron_uniapl.config.discriminator import CoTrainedDiscriminatorConfig
    from megatron_uniapl.config.model import ModelOptions
    from megatron_uniapl.config.variants import objective_for_variant
    from megatron_uniapl.discriminator.cotrained import CoTrainedDiscriminator
    from megatron_uniapl.discriminator.megatron_backbone import (
        build_megatron_discriminator,
    )
    from megatron_uniapl.model.distributed import (
        OptimizerSettings,
        build_optimizer,
        wrap_ddp,
    )
    from megatron_uniapl.model.hf_config import load_qwen3_arch
    from megatron_uniapl.model.tiny import create_tiny_qwen3

    parallel.initialize(1, 1)
    with tempfile.TemporaryDirectory() as tmp:
        hf_dir = create_tiny_qwen3(tmp, seed=0)
        arch = load_qwen3_arch(hf_dir)
        options = ModelOptions(
            dtype="float32" if not torch.cuda.is_available() else "bfloat16", spec="portable"
        )
        from megatron_uniapl.convert.hf_io import HFCheckpointReader
        from megatron_uniapl.convert.megatron_params import load_hf_into_model
        from megatron_uniapl.model.builder import build_qwen3_model

        model = build_qwen3_model(arch, options)
        with HFCheckpointReader(hf_dir) as reader:
            load_hf_into_model(model, reader, arch, 0, 1)
        settings = OptimizerSettings(lr=1e-6)
        chunks = wrap_ddp([model], settings)
        optimizer, _ = build_optimizer(chunks, settings, total_steps=100)
        scorer = build_megatron_discriminator(arch, options, hf_dir)
        disc = CoTrainedDiscriminator(scorer, CoTrainedDiscriminatorConfig(lr=1e-6))

    rng = random.Random(0)
    rollouts, demos = _rollouts(args, rng), _demos(args, rng)
    roll_tokens = sum(len(s.response_ids) for s in rollouts)
    demo_tokens = sum(len(s.response_ids) for s in demos)
    expert_ids = _padded(demos)
    policy_ids = _padded(rollouts)
    cases = {
        "grpo": _step_fn(chunks, optimizer, list(rollouts), objective_for_variant("grpo"), args.budget),
        "uniapl": _step_fn(
            chunks,
            optimizer,
            list(rollouts) + list(demos),
            objective_for_variant("uniapl"),
            args.budget,
            disc=(disc, expert_ids, policy_ids),
        ),
    }
    for fn in cases.values():
        fn()  # warm-up
    best: dict[str, dict[str, float]] = {name: {} for name in cases}
    for _ in range(args.repeats):
        for name, fn in cases.items():
            for phase, seconds in fn().items():
                best[name][phase] = min(best[name].get(phase, float("inf")), seconds)
    total = {name: sum(phases.values()) for name, phases in best.items()}
    print(
        f"response tokens: rollouts {roll_tokens}, demonstrations {demo_tokens} "
        f"(1:{demo_tokens / roll_tokens:.2f}); device {'cuda' if torch.cuda.is_available() else 'cpu'}"
    )
    print(f"{'phase':<10}{'grpo_s':>10}{'uniapl_s':>10}{'ratio':>8}")
    for phase in ("logprobs", "train", "disc"):
        g, u = best["grpo"].get(phase, 0.0), best["uniapl"].get(phase, 0.0)
        print(f"{phase:<10}{g:>10.3f}{u:>10.3f}{(u / g if g else float('nan')):>8.2f}")
    print(
        f"{'total':<10}{total['grpo']:>10.3f}{total['uniapl']:>10.3f}{total['uniapl'] / total['grpo']:>8.2f}"
    )
    print(f"uniapl/grpo step time ratio: {total['uniapl'] / total['grpo']:.2f}x (target <= 1.2x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
