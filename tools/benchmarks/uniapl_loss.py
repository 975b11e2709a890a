"""What the UniAPL objective costs over GRPO alone, on the same rollouts.

Three configurations of one packed step, each timed in this process:
  grpo          rollouts only, the task surrogate (the baseline);
  uniapl-roll   the same rollouts, task + adversarial surrogates (+ KL when --beta > 0);
  uniapl        the same rollouts plus demonstrations (1 demo per RL prompt), SFT + both surrogates.
Two costs each (best of --repeats rounds, cases interleaved): `loss` (log-probs from given
logits, the loss, backward to the logits: what this package adds) and `step` (a tiny random
Qwen3 forward + loss + backward). Ratios are against grpo. The model attends across the samples
of a packed row here (no varlen attention in this harness); the cost comparison is unaffected.
"""

from __future__ import annotations

import argparse
import random
import time

import torch

from megatron_uniapl.algorithm.advantages import assign_advantages
from megatron_uniapl.config.variants import objective_for_variant
from megatron_uniapl.data.packing import pack_samples
from megatron_uniapl.data.sample import Sample, SampleKind
from megatron_uniapl.losses.logprobs import logprobs_from_logits
from megatron_uniapl.losses.uniapl import uniapl_loss


def _batch(args, rng: random.Random, with_demos: bool) -> list[Sample]:
    samples = []
    for g in range(args.prompts):
        prompt = [rng.randrange(args.vocab) for _ in range(args.prompt_len)]
        for _ in range(args.group):
            n = rng.randint(args.response_len // 2, args.response_len)
            samples.append(
                Sample(
                    prompt,
                    [rng.randrange(args.vocab) for _ in range(n)],
                    SampleKind.ROLLOUT,
                    group_id=g,
                    rollout_logprobs=[-rng.uniform(0.1, 5.0) for _ in range(n)],
                    rewards={"task": float(rng.random() > 0.5)},
                    disc_score=rng.gauss(0.0, 1.0),
                )
            )
        if with_demos:
            samples.append(
                Sample(prompt, [rng.randrange(args.vocab) for _ in range(args.response_len)], SampleKind.DEMO)
            )
    return samples


def _interleaved_min(fns: dict, repeats: int) -> dict[str, float]:
    """Best-of-`repeats` seconds per function, the functions taking turns each round.

    Taking turns spreads drift (other processes, frequency changes) over all cases alike, and the
    minimum is the estimate least disturbed by interference on a shared machine.
    """
    for fn in fns.values():
        fn()  # warm-up
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: min(t) for name, t in times.items()}


def _case(args, model, variant: str, with_demos: bool):
    """(loss-only function, full-step function, real tokens) of one configuration."""
    cfg = objective_for_variant(variant, beta=args.beta)
    w = cfg.weights_at(0)
    samples = _batch(args, random.Random(0), with_demos)
    assign_advantages(samples, w, cfg.pg)
    packed = pack_samples(samples, args.max_tokens)
    mbs = packed.micro_batches[0]
    counts = packed.term_counts()
    with torch.no_grad():
        logits = [model(input_ids=mb.input_ids, position_ids=mb.position_ids).logits for mb in mbs]
        for mb, lg in zip(mbs, logits):
            mb.old_logprobs = logprobs_from_logits(lg, mb.targets)
    refs = [mb.old_logprobs - 0.01 for mb in mbs]

    def loss_of(mb, lg, ref):
        lp = logprobs_from_logits(lg, mb.targets)
        return uniapl_loss(
            lp, weights=w, pg=cfg.pg, global_counts=counts, ref_logprobs=ref, **mb.loss_inputs()
        )[0]

    def loss_only():
        for mb, lg, ref in zip(mbs, logits, refs):
            leaf = lg.detach().requires_grad_()
            loss_of(mb, leaf, ref).backward()

    def full_step():
        model.zero_grad(set_to_none=True)
        for mb, ref in zip(mbs, refs):
            loss_of(mb, model(input_ids=mb.input_ids, position_ids=mb.position_ids).logits, ref).backward()

    return loss_only, full_step, sum(mb.num_real_tokens for mb in mbs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench uniapl_loss", description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=8, help="RL prompts per step")
    parser.add_argument("--group", type=int, default=4, help="rollouts per prompt (G)")
    parser.add_argument("--prompt-len", type=int, default=32)
    parser.add_argument("--response-len", type=int, default=96)
    parser.add_argument("--vocab", type=int, default=8192, help="vocabulary of the tiny model")
    parser.add_argument("--max-tokens", type=int, default=1024, help="max_tokens_per_micro_batch")
    parser.add_argument("--beta", type=float, default=0.0, help="KL weight for the uniapl cases")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (1 is steadiest on shared machines)"
    )
    parser.add_argument("--repeats", type=int, default=7, help="rounds; the best time of each case is kept")
    args = parser.parse_args(argv)

    from transformers import Qwen3ForCausalLM

    from megatron_uniapl.model.tiny import tiny_qwen3_config

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = Qwen3ForCausalLM(
        tiny_qwen3_config(
            vocab_size=args.vocab,
            max_position_embeddings=4096,
            pad_token_id=0,
            bos_token_id=0,
            eos_token_id=1,
        )
    )
    cases = [("grpo", "grpo", False), ("uniapl-roll", "a-grpo", False), ("uniapl", "uniapl", True)]
    built = {name: _case(args, model, variant, demos) for name, variant, demos in cases}
    loss_s = _interleaved_min({name: c[0] for name, c in built.items()}, args.repeats)
    step_s = _interleaved_min({name: c[1] for name, c in built.items()}, args.repeats)
    results = {name: (loss_s[name], step_s[name], built[name][2]) for name in built}
    base_loss, base_step, base_tokens = results["grpo"]
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, vocab {args.vocab}, beta {args.beta}"
    )
    print(
        f"{'case':<12} {'tokens':>7} {'loss ms':>9} {'x grpo':>7} {'step ms':>9} {'x grpo':>7} "
        f"{'step x/token':>13}"
    )
    for name, (loss_s, step_s, tokens) in results.items():
        per_token = (step_s / tokens) / (base_step / base_tokens)
        print(
            f"{name:<12} {tokens:>7} {loss_s * 1e3:>9.2f} {loss_s / base_loss:>7.2f} "
            f"{step_s * 1e3:>9.2f} {step_s / base_step:>7.2f} {per_token:>13.2f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
