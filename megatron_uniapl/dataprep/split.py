"""`tools/split_data.py`: prompts + teacher outputs -> demonstrations, RL prompts, manifest.

    python tools/split_data.py --prompts prompts.jsonl --teacher-out teacher.jsonl --out-dir $UNIAPL_DATA \
        [--demo-fraction 0.5] [--eval-count 0] [--failed-reference drop] [--both]

Reads the prompt file of `make_prompts` and what `generate_demos` wrote for it (the kept
responses in TEACHER_OUT, the rejected ones in its attempt log), and writes into OUT_DIR:
- `demos.jsonl`: demonstrations `{"id", "prompt", "response"}` whose response passes the filter;
- `rl_prompts.jsonl`: RL prompts with `reference_response` (the teacher's response);
- `eval.jsonl` (with `--eval-count N`): N held-out prompts in IFEval's format;
- `manifest.json`: the prompt manifest, the teacher's runs, this split's settings and counts,
  constraints per type per output, and every output's sha256.

Prompts are assigned before the teacher's outcome is looked at (a seeded shuffle: first the
held-out set, then `demo_fraction` of the rest to demonstrations, the others to RL), so that
the RL set is not left with the prompts the teacher failed. A prompt is in one set only unless
`--both` puts every non-held-out prompt in both. The filter is applied again here with the
reward checkers (`--filter strict|loose|none`), so teacher outputs kept without a filter are
judged too.

A demonstration needs a passing response; a demo-set prompt without one is dropped (counted).
An RL prompt whose reference fails the filter (or that has no response) follows
`--failed-reference`: `drop` (the default, counted), `keep-without` (no reference; only for
runs without a discriminator, which compares against it), or `keep-failing` (the failing
response stays the reference; without any usable response the prompt is kept without one).
Every prompt must have been attempted by the teacher: a
partial generation is an error unless `--allow-unattempted` (they then count as failed).
"""

from __future__ import annotations

import argparse
import logging
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from megatron_uniapl.teacher import record_log as demo_log
from megatron_uniapl.teacher.generate import attempts_path, prompt_key
from megatron_uniapl.data.jsonl import DataError
from megatron_uniapl.data.schemas import RLPrompt, read_rl_prompts
from megatron_uniapl.data import manifest
from megatron_uniapl.rewards.reward import RewardMode, score

logger = logging.getLogger(__name__)

FAILED_REFERENCE = ("drop", "keep-without", "keep-failing")
FILTERS = ("strict", "loose", "none")


@dataclass
class SplitConfig:
    """One split of prompts and teacher outputs into training files."""

    prompts: Path
    """RL-prompt JSONL (make_prompts' output)."""
    teacher_out: Path
    """generate_demos' `--out` file (its attempt log is read beside it)."""
    out_dir: Path
    """Where demos.jsonl, rl_prompts.jsonl, [eval.jsonl] and manifest.json are written."""
    seed: int = 0
    """Seed of the assignment shuffle."""
    demo_fraction: float = 0.5
    """Share of the non-held-out prompts that become demonstrations (the paper's 1:1)."""
    eval_count: int = 0
    """Prompts held out as an evaluation set (never in training)."""
    both: bool = False
    """Put every non-held-out prompt in both sets (demonstration and RL prompt)."""
    failed_reference: str = "drop"
    """What happens to an RL prompt whose teacher response fails the filter (see module doc)."""
    filter: str = "strict"
    """Verdict a teacher response must pass: strict, loose, or none (any non-blank response)."""
    allow_unattempted: bool = False
    """Treat prompts the teacher never attempted as failed instead of refusing to split."""

    def validate(self) -> None:
        if self.failed_reference not in FAILED_REFERENCE:
            raise ValueError(f"failed_reference must be one of {FAILED_REFERENCE}, got {self.failed_reference!r}")
        if self.filter not in FILTERS:
            raise ValueError(f"filter must be one of {FILTERS}, got {self.filter!r}")
        if not 0 <= self.demo_fraction <= 1:
            raise ValueError(f"demo_fraction must be in [0, 1], got {self.demo_fraction}")
        if self.eval_count < 0:
            raise ValueError(f"eval_count must be >= 0, got {self.eval_count}")


def teacher_responses(teacher_out: Path) -> tuple[dict[str, str], dict[str, str | None]]:
    """(kept response per key, rejected response or None per attempted key)."""
    kept = {k: r["response"] for k, r in demo_log.read_keys(teacher_out, "id").items()}
    attempts = demo_log.read_keys(attempts_path(teacher_out), "id")
    rejected = {k: r.get("rejected_response") for k, r in attempts.items() if k not in kept}
    return kept, rejected


def _passes(prompt: RLPrompt, response: str | None, mode: str) -> bool:
    if response is None or not response.strip():
        return False
    return mode == "none" or score(prompt, response, RewardMode(mode)) == 1.0


def assign(keys: list[str], config: SplitConfig) -> tuple[list[str], list[str], list[str]]:
    """(held out, demonstration set, RL set): a seeded shuffle of the sorted keys."""
    order = sorted(keys)
    random.Random(config.seed).shuffle(order)
    held, rest = order[: config.eval_count], order[config.eval_count:]
    if config.both:
        return held, rest, rest
    cut = round(len(rest) * config.demo_fraction)
    return held, rest[:cut], rest[cut:]


def split(config: SplitConfig) -> dict:
    """Write the training files; returns the manifest."""
    config.validate()
    # Keyed as generate_demos keys them: the record's key, else a hash of the prompt text.
    prompts = {prompt_key(p): p for p in read_rl_prompts(config.prompts)}
    kept, rejected = teacher_responses(config.teacher_out)
    unattempted = [k for k in prompts if k not in kept and k not in rejected]
    if unattempted and not config.allow_unattempted:
        raise DataError(f"{config.teacher_out}: {len(unattempted)} of {len(prompts)} prompts have no teacher "
                        f"attempt (first: {unattempted[0]!r}); finish generate_demos or pass --allow-unattempted")
    if config.eval_count > len(prompts):
        raise ValueError(f"eval_count {config.eval_count} exceeds the {len(prompts)} prompts")
    held, demo_keys, rl_keys = assign(list(prompts), config)
    response = {k: kept.get(k, rejected.get(k)) for k in prompts}
    passing = {k: _passes(prompts[k], response[k], config.filter) for k in prompts}
    counts: Counter = Counter(prompts=len(prompts), unattempted=len(unattempted),
                              teacher_passing=sum(passing.values()))
    demos, rl, per_type = [], [], {"demos": Counter(), "rl_prompts": Counter(), "eval": Counter()}
    for k in demo_keys:
        if passing[k]:
            p = prompts[k]
            demos.append({"id": k, "prompt": p.prompt, "response": response[k]})
            per_type["demos"].update(p.instruction_id_list)
        else:
            counts["demo_dropped_no_passing_response"] += 1
    for k in rl_keys:
        p = prompts[k]
        record = {"key": k, "prompt": p.prompt, "instruction_id_list": list(p.instruction_id_list),
                  "kwargs": [dict(kw) for kw in p.kwargs]}
        if passing[k]:
            record["reference_response"] = response[k]
            counts["rl_with_passing_reference"] += 1
        elif config.failed_reference == "drop":
            counts["rl_dropped_failed_reference"] += 1
            continue
        elif config.failed_reference == "keep-failing" and response[k] and response[k].strip():
            record["reference_response"] = response[k]
            counts["rl_with_failing_reference"] += 1
        else:
            counts["rl_without_reference"] += 1
        rl.append(record)
        per_type["rl_prompts"].update(p.instruction_id_list)
    evals = []
    for k in held:
        p = prompts[k]
        evals.append({"key": k, "prompt": p.prompt, "instruction_id_list": list(p.instruction_id_list),
                      "kwargs": [dict(kw) for kw in p.kwargs]})
        per_type["eval"].update(p.instruction_id_list)
    if not demos and not rl:
        raise ValueError(f"nothing to write: no prompt of {config.prompts} has a usable teacher response "
                         f"(counts: {dict(counts)})")
    counts.update(demos=len(demos), rl_prompts=len(rl), eval=len(evals))
    config.out_dir.mkdir(parents=True, exist_ok=True)
    outputs = {}
    for name, records in (("demos", demos), ("rl_prompts", rl), ("eval", evals)):
        if name == "eval" and not config.eval_count:
            continue
        path = config.out_dir / f"{name}.jsonl"
        manifest.write_jsonl_atomic(path, records)
        outputs[name] = manifest.file_entry(path, len(records))
    result = {
        "format": manifest.FORMAT_VERSION, "tool": "split_data",
        "prompts": {**manifest.file_entry(config.prompts, len(prompts)),
                    "manifest": manifest.read_json(manifest.manifest_path(config.prompts))},
        "teacher": {"out": manifest.file_entry(config.teacher_out, len(kept)),
                    "attempts": manifest.file_entry(attempts_path(config.teacher_out)),
                    "runs": manifest.read_json(manifest.run_record_path(config.teacher_out)) or []},
        "split": {"seed": config.seed, "demo_fraction": config.demo_fraction, "eval_count": config.eval_count,
                  "both": config.both, "failed_reference": config.failed_reference, "filter": config.filter},
        "counts": dict(counts),
        "constraints_per_type": {name: dict(sorted(c.items())) for name, c in per_type.items()},
        "outputs": outputs,
    }
    manifest.write_json_atomic(config.out_dir / "manifest.json", result)
    return result


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="split_data.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=Path, required=True, help="make_prompts' RL-prompt JSONL")
    parser.add_argument("--teacher-out", type=Path, required=True, help="generate_demos' --out file")
    parser.add_argument("--out-dir", type=Path, required=True, help="folder for the training files")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--demo-fraction", type=float, default=0.5)
    parser.add_argument("--eval-count", type=int, default=0, help="prompts held out as eval.jsonl")
    parser.add_argument("--both", action="store_true", help="every prompt in both sets")
    parser.add_argument("--failed-reference", choices=FAILED_REFERENCE, default="drop")
    parser.add_argument("--filter", choices=FILTERS, default="strict")
    parser.add_argument("--allow-unattempted", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    config = SplitConfig(args.prompts, args.teacher_out, args.out_dir, args.seed, args.demo_fraction,
                         args.eval_count, args.both, args.failed_reference, args.filter, args.allow_unattempted)
    try:
        result = split(config)
    except (DataError, ValueError, OSError) as err:
        print(f"split_data: {err}")
        return 2
    print(" ".join(f"{k}={v}" for k, v in result["counts"].items()))
    print(f"training files and manifest.json in {args.out_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
