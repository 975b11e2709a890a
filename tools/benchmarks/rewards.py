"""Benchmark: IFEval reward checking, serial vs a process pool, on the same responses.

The workload is the 541 IFEval prompts with the deterministic candidate responses of
`rewards.corpus` (satisfying, narrowly violating, loose-mode wrappers, blank and foreign texts),
repeated with new seeds until `--num` responses. It prints responses/s of the serial baseline
and of the pool (started before timing: a training run keeps it warm), and their ratio.

    python tools/bench.py rewards [--num 10000] [--workers N] [--mode strict]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from megatron_uniapl.config.reward import RewardMode
from megatron_uniapl.rewards.corpus import responses_for
from megatron_uniapl.rewards.registry import Constraint, build_constraints
from megatron_uniapl.rewards.reward import RewardPool, score_batch


def ifeval_workload(path: Path, num: int) -> tuple[list[list[Constraint]], list[str]]:
    """`num` (constraints, response) pairs from the IFEval prompts at `path`."""
    with open(path, encoding="utf-8") as f:
        records = [json.loads(line) for line in f]
    constraints = [build_constraints(r["instruction_id_list"], r["kwargs"], f"{path}:{i + 1}")
                   for i, r in enumerate(records)]
    prompts: list[list[Constraint]] = []
    responses: list[str] = []
    seed = 0
    while len(responses) < num:
        for record, cons in zip(records, constraints):
            for response in responses_for(record["prompt"], record["instruction_id_list"],
                                          record["kwargs"], seed=seed):
                prompts.append(cons)
                responses.append(response)
        seed += 1
    return prompts[:num], responses[:num]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench rewards", description=__doc__.splitlines()[0])
    parser.add_argument("--num", type=int, default=10_000, help="responses to score")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="pool processes (default: all CPUs)")
    parser.add_argument("--mode", default="strict", choices=[m.value for m in RewardMode])
    parser.add_argument("--prompts", type=Path, default=None,
                        help="IFEval-format JSONL (default: the bundled IFEval prompts)")
    args = parser.parse_args(argv)
    if args.prompts is None:
        from megatron_uniapl.assets import ifeval_input_path

        args.prompts = ifeval_input_path()

    prompts, responses = ifeval_workload(args.prompts, args.num)
    chars = sum(len(r) for r in responses)
    print(f"rewards: {len(responses)} responses ({chars / len(responses):.0f} chars on average), "
          f"mode {args.mode}, {args.workers} workers, {os.cpu_count()} CPUs")

    score_batch(prompts[:50], responses[:50], args.mode)  # load models outside the timing
    start = time.perf_counter()
    serial = score_batch(prompts, responses, args.mode)
    serial_s = time.perf_counter() - start

    start = time.perf_counter()
    with RewardPool(args.workers) as pool:
        startup_s = time.perf_counter() - start
        start = time.perf_counter()
        pooled = pool.score(prompts, responses, args.mode)
        pooled_s = time.perf_counter() - start
    if pooled != serial:
        print("rewards: the pool's rewards differ from the serial ones")
        return 1
    print(f"mean reward {sum(serial) / len(serial):.4f}")
    print(f"serial: {len(responses) / serial_s:10.0f} responses/s ({serial_s:.2f} s)")
    print(f"pool:   {len(responses) / pooled_s:10.0f} responses/s ({pooled_s:.2f} s, "
          f"start-up {startup_s:.2f} s)")
    print(f"ratio pool/serial: {serial_s / pooled_s:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
