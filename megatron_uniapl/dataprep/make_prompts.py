"""`tools/make_prompts.py`: verifiable RL prompts from plain instructions, decontaminated.

    python tools/make_prompts.py --instructions my_requests.jsonl --out data/prompts.jsonl \
        [--eval-set asset:ifeval --eval-set my_eval.jsonl] [--seed 0 --max-constraints 3]

Each instruction gets 1 to k constraints from the reward registry (drawn by weight, refused
when they contradict each other, proven satisfiable by a witness response, stated in natural
language; see `builder`). Instructions that overlap an evaluation prompt are dropped first
(`decontam`; IFEval's prompts by default). Written atomically:
- `OUT`: RL-prompt records `{"key", "prompt", "instruction_id_list", "kwargs"}` (IFEval's
  format; `data/schemas.py` reads it; the teacher adds references later);
- `OUT.manifest.json`: sources and eval sets with sha256, settings, drop counts by reason,
  refused draws by rule, constraints per type;
- `OUT.dropped.jsonl`: every dropped instruction with where it came from and why;
- with `--witness-demos PATH`: the witness responses as demonstrations (a scripted expert: it
  satisfies the constraints but does not answer the request; the CPU walkthrough trains a tiny
  stand-in teacher on it).
A rerun with the same settings and inputs finds its manifest and does nothing; different
settings over an existing output are refused unless `--overwrite` (keys of a changed file would
no longer match a teacher's partial output).
"""

from __future__ import annotations

import argparse
import logging
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from megatron_uniapl.assets import AssetError
from megatron_uniapl.data.jsonl import DataError
from megatron_uniapl.data import manifest
from megatron_uniapl.dataprep import builder, decontam, instructions
from megatron_uniapl.dataprep.catalog import SPECS
from megatron_uniapl.rewards import text

logger = logging.getLogger(__name__)

DEFAULT_EVAL_SETS = ("asset:ifeval",)


@dataclass
class MakePromptsConfig:
    """One prompt-construction run."""

    sources: list[str]
    """Instruction files (JSONL, JSON array, plain text) or named assets (`asset:alpaca_eval`)."""
    out: Path
    """The RL-prompt JSONL to write."""
    seed: int = 0
    """Seed of every draw (each instruction's draw depends only on the seed and its text)."""
    per_instruction: int = 1
    """Prompts made from each instruction (different constraints each)."""
    builder: builder.BuilderConfig = field(default_factory=builder.BuilderConfig)
    """How constraints are drawn."""
    eval_sets: list[str] = field(default_factory=lambda: list(DEFAULT_EVAL_SETS))
    """Evaluation files to decontaminate against (IFEval-format JSONL or one prompt per line);
    empty: no decontamination."""
    decontam: decontam.DecontamConfig = field(default_factory=decontam.DecontamConfig)
    """How overlap is measured."""
    text_field: str | None = None
    """The JSONL/JSON field holding the instruction (default: instruction, prompt, text, question)."""
    max_instruction_words: int | None = None
    """Drop longer instructions (counted); None keeps all."""
    limit: int | None = None
    """Use only the first N instructions left after the drops (duplicates, length, overlap)."""
    witness_demos: Path | None = None
    """Also write the witnesses as demonstrations here."""
    overwrite: bool = False
    """Replace an existing output made with other settings or inputs."""
    progress: bool = True
    """Progress bar on stderr."""

    def validate(self) -> None:
        self.builder.validate()
        self.decontam.validate()
        if not self.sources:
            raise ValueError("no instruction source given")
        if self.per_instruction < 1:
            raise ValueError(f"per_instruction must be >= 1, got {self.per_instruction}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be >= 1, got {self.limit}")

    def settings(self) -> dict:
        """What determines the output, besides the input files' contents."""
        return {"draw_version": builder.DRAW_VERSION, "sources": list(self.sources), "seed": self.seed,
                "per_instruction": self.per_instruction,
                "builder": asdict(self.builder), "eval_sets": list(self.eval_sets),
                "decontam": asdict(self.decontam), "text_field": self.text_field,
                "max_instruction_words": self.max_instruction_words, "limit": self.limit,
                "witness_demos": None if self.witness_demos is None else str(self.witness_demos)}


def _inputs(config: MakePromptsConfig) -> tuple[list, list, list]:
    """(instructions per source, source entries, eval sets)."""
    read, entries = [], []
    for source in config.sources:
        found = instructions.read_instructions(source, config.text_field)
        read.append(found)
        entries.append({"name": source, **manifest.file_entry(instructions.resolve(source), len(found))})
    evals = [decontam.read_eval_set(name, instructions.resolve(name)) for name in config.eval_sets]
    return read, entries, evals


def _current(entry: dict | None) -> bool:
    path = Path(entry["path"]) if entry else None
    return path is not None and path.is_file() and manifest.sha256_file(path) == entry["sha256"]


def _unchanged(config: MakePromptsConfig, entries: list, evals: list) -> bool:
    """True when the outputs exist as this configuration would write them; raises when an
    existing output would be replaced without `overwrite`."""
    if not config.out.exists():
        return False
    old = manifest.read_json(manifest.manifest_path(config.out)) or {}
    outputs = old.get("outputs", {})
    same = (old.get("settings") == config.settings()
            and [(s["name"], s["sha256"]) for s in old.get("sources", [])]
            == [(e["name"], e["sha256"]) for e in entries]
            and [s["sha256"] for s in old["decontamination"]["eval_sets"]] == [e.sha256 for e in evals]
            and _current(outputs.get("prompts")))
    if same:
        # Rewriting gives the same prompts; only a lost witness file makes it worth doing.
        return config.witness_demos is None or _current(outputs.get("witness_demos"))
    if not config.overwrite:
        raise ValueError(f"{config.out} exists and was not made with these settings and inputs (see "
                         f"{manifest.manifest_path(config.out)}); pass --overwrite to replace it")
    return same


def make_prompts(config: MakePromptsConfig) -> dict:
    """Build (or find up to date) the prompt file; returns the manifest."""
    config.validate()
    read, entries, evals = _inputs(config)
    if _unchanged(config, entries, evals):
        logger.info("%s is up to date with its manifest; nothing to do", config.out)
        return manifest.read_json(manifest.manifest_path(config.out))
    index = decontam.EvalIndex(evals, config.decontam) if evals else None
    counts: Counter = Counter()
    dropped: list[dict] = []
    seen: set[str] = set()
    kept: list[instructions.Instruction] = []
    for item in (i for found in read for i in found):
        counts["instructions_read"] += 1
        norm = instructions.normalized(item.text)
        reason = None
        if norm in seen:
            reason = {"reason": "duplicate"}
        elif config.max_instruction_words is not None and text.count_words(item.text) > config.max_instruction_words:
            reason = {"reason": "too_long"}
        elif index is not None:
            hit = index.match(item.text)
            if hit is not None:
                reason = {"reason": "contaminated", "eval_set": hit.eval_set, "eval_key": hit.key,
                          "overlap": hit.overlap, "match": hit.kind}
        seen.add(norm)
        if reason:
            counts[reason["reason"]] += 1
            dropped.append({"where": item.where, "instruction": item.text, **reason})
            continue
        if index is not None and len(decontam.words(item.text)) < config.decontam.n:
            counts["checked_exactly_only"] += 1
        kept.append(item)
    if config.limit is not None:
        kept = kept[: config.limit]
    records, witnesses, refused = [], [], Counter()
    per_type: Counter = Counter()
    per_prompt: Counter = Counter()
    keys: set[str] = set()
    from tqdm import tqdm

    jobs = [(item, copy) for item in kept for copy in range(config.per_instruction)]
    for item, copy in tqdm(jobs, desc="prompts", disable=not config.progress):
        made = builder.draw(item.text, builder.instruction_rng(config.seed, item.text, copy), config.builder, refused)
        if made is None:
            counts["no_draw"] += 1
            dropped.append({"where": item.where, "instruction": item.text, "reason": "no_draw", "copy": copy})
            continue
        if made.key in keys:  # the same instruction drew the same constraints twice
            counts["repeated_draw"] += 1
            continue
        keys.add(made.key)
        records.append(made.record())
        witnesses.append({"id": made.key, "prompt": made.prompt, "response": made.witness})
        per_type.update(made.instruction_ids)
        per_prompt[len(made.instruction_ids)] += 1
    if not records:
        raise ValueError(f"no prompts were made from {', '.join(config.sources)} (see the drop counts: {dict(counts)})")
    counts["prompts"] = len(records)
    outputs = {}
    manifest.write_jsonl_atomic(config.out, records)
    outputs["prompts"] = manifest.file_entry(config.out, len(records))
    dropped_path = config.out.with_name(config.out.name + ".dropped.jsonl")
    manifest.write_jsonl_atomic(dropped_path, dropped)
    outputs["dropped"] = manifest.file_entry(dropped_path, len(dropped))
    if config.witness_demos is not None:
        manifest.write_jsonl_atomic(config.witness_demos, witnesses)
        outputs["witness_demos"] = manifest.file_entry(config.witness_demos, len(witnesses))
    contaminated = Counter(d["eval_set"] for d in dropped if d["reason"] == "contaminated")
    result = {
        "format": manifest.FORMAT_VERSION, "tool": "make_prompts", "settings": config.settings(),
        "sources": entries,
        "decontamination": {**(index.manifest() if index else {"eval_sets": []}),
                            "dropped": sum(contaminated.values()), "dropped_by_eval_set": dict(contaminated)},
        "counts": dict(counts), "refused_draws": dict(sorted(refused.items())),
        "constraints_per_type": dict(sorted(per_type.items())),
        "constraints_per_prompt": {str(k): v for k, v in sorted(per_prompt.items())},
        "outputs": outputs,
    }
    manifest.write_json_atomic(manifest.manifest_path(config.out), result)
    return result


def parse_weights(items: list[str], types: str | None = None) -> dict[str, float]:
    """Weights per type: 1.0 each, or only for the comma-separated `types`; then `TYPE=W` items."""
    if types:
        chosen = [t.strip() for t in types.split(",") if t.strip()]
        unknown = [t for t in chosen if t not in SPECS]
        if unknown:
            raise ValueError(f"--types: unknown constraint type {unknown[0]!r}; known: {', '.join(sorted(SPECS))}")
        weights = {t: 1.0 if t in chosen else 0.0 for t in SPECS}
    else:
        weights = {t: 1.0 for t in SPECS}
    for item in items:
        name, _, value = item.partition("=")
        try:
            weight = float(value)
        except ValueError:
            raise ValueError(f"--weight {item!r}: expected TYPE=NUMBER") from None
        if name not in SPECS:
            raise ValueError(f"--weight {item!r}: unknown constraint type; known: {', '.join(sorted(SPECS))}")
        else:
            weights[name] = weight
    return weights


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="make_prompts.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--instructions", action="append", required=True,
                        help="instruction file (jsonl, json, txt) or asset:alpaca_eval; repeatable")
    parser.add_argument("--out", type=Path, required=True, help="RL-prompt JSONL to write")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--per-instruction", type=int, default=1, help="prompts per instruction")
    parser.add_argument("--min-constraints", type=int, default=1)
    parser.add_argument("--max-constraints", type=int, default=3)
    parser.add_argument("--types", default=None,
                        help="comma-separated constraint types to draw from (default: all 25)")
    parser.add_argument("--weight", action="append", default=[], metavar="TYPE=W",
                        help="draw weight of a constraint type (default 1; 0 switches it off); repeatable")
    parser.add_argument("--eval-set", action="append", default=None,
                        help="eval prompts to decontaminate against (default: asset:ifeval); "
                             "'none' for no decontamination; repeatable")
    parser.add_argument("--ngram", type=int, default=decontam.DecontamConfig.n, help="decontamination n-gram length")
    parser.add_argument("--overlap", type=float, default=decontam.DecontamConfig.threshold,
                        help="decontamination threshold (fraction of shared n-grams)")
    parser.add_argument("--field", default=None, help="JSON field of the instruction text")
    parser.add_argument("--max-instruction-words", type=int, default=None)
    parser.add_argument("--limit", type=int, default=None, help="only the first N instructions")
    parser.add_argument("--witness-demos", type=Path, default=None,
                        help="also write the witness responses as demonstrations")
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--no-progress", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    eval_sets = list(DEFAULT_EVAL_SETS) if args.eval_set is None else [e for e in args.eval_set if e != "none"]
    try:
        config = MakePromptsConfig(
            args.instructions, args.out, args.seed, args.per_instruction,
            builder.BuilderConfig(args.min_constraints, args.max_constraints,
                                  parse_weights(args.weight, args.types)),
            eval_sets, decontam.DecontamConfig(args.ngram, args.overlap), args.field,
            args.max_instruction_words, args.limit, args.witness_demos, args.overwrite, not args.no_progress)
        result = make_prompts(config)
    except (DataError, ValueError, OSError, AssetError) as err:
        print(f"make_prompts: {err}")
        return 2
    counts = result["counts"]
    print(" ".join(f"{k}={v}" for k, v in counts.items()))
    print(f"contaminated by eval set: {result['decontamination']['dropped_by_eval_set']}")
    print(f"prompts: {args.out}; manifest: {manifest.manifest_path(args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
