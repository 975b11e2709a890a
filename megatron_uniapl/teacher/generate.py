"""`tools/generate_demos.py`: expert demonstrations from a teacher model, resumable and filterable.

    python tools/generate_demos.py --teacher HF_DIR --prompts prompts.jsonl --out demos.jsonl \
        [--filter strict --n 4] [--tp 8 under torchrun]

The teacher (any model directory vLLM serves, or a Megatron checkpoint of this project) answers
each prompt of an RL-prompt file (IFEval files are accepted as is) with the policy's chat format
(Qwen3 template, thinking off). Two append-only files are written:
- `OUT`: the demonstrations, `{"prompt", "response", "id"}` per line (`data.schemas`'s
  demonstration format; `id` is the prompt's key);
- `OUT.attempts.jsonl`: one line per prompt tried, `{"id", "samples", "passing", "truncated",
  "kept"}`, so that prompts whose samples were all rejected are not retried on restart and the
  counts of the whole run can be summed; a prompt with no kept sample also records its first
  finished non-blank sample as `"rejected_response"` (or null), which the data split can keep
  as a failing reference;
- `OUT.runs.json`: per invocation, the teacher, prompt file (sha256), filter, sampling and
  counts (for the data manifest).

A prompt's key is its `key` field, or else a hash of its text (identical prompts then share one
demonstration). A restart skips every key present in either file; see `record_log` for how an
interrupted write is recovered. With `--filter`, a sample is kept only if it satisfies all of its
prompt's constraints (strict or loose verdicts, the same checkers that reward RL); with `--n`
samples per prompt the first passing one is kept. Samples cut off at `max_tokens` are rejected
unless `--keep-truncated`; blank samples are never kept, and a leading `<think>` block (a
teacher that reasons regardless of the template) is removed before checking and writing.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

from megatron_uniapl.config.reward import RewardMode
from megatron_uniapl.config.rollout import SamplingConfig
from megatron_uniapl.data.jsonl import DataError, iter_jsonl
from megatron_uniapl.data.schemas import RLPrompt, parse_rl_prompt
from megatron_uniapl.rewards.reward import score
from megatron_uniapl.rollout import chat_generation as gen
from megatron_uniapl.rollout.engine import Generation
from megatron_uniapl.teacher import record_log

logger = logging.getLogger(__name__)

FILTERS = ("strict", "loose")


@dataclass
class DemoConfig:
    """One demonstration-generation run."""

    teacher: Path
    """Teacher model: Hugging Face directory (or a Megatron checkpoint of this project)."""
    prompts: Path
    """RL-prompt JSONL (prompt, instruction_id_list, kwargs; IFEval format accepted)."""
    out: Path
    """Demonstrations JSONL, appended to; `OUT.attempts.jsonl` is written beside it."""
    filter: str | None = None
    """None: keep every finished sample; "strict"/"loose": keep only samples that satisfy all
    of the prompt's constraints under that verdict."""
    sampling: SamplingConfig = field(
        default_factory=lambda: SamplingConfig(temperature=0.7, top_p=0.8, max_tokens=2048, seed=0)
    )
    """Teacher decoding; `n` samples per prompt, the first acceptable one is kept."""
    keep_truncated: bool = False
    """Accept samples that hit `max_tokens` (finish reason "length"); off: they are rejected."""
    batch_size: int = 64
    """Prompts per engine call; outputs are made durable after every batch."""
    limit: int | None = None
    """Consider only the first N prompts of the file."""
    serve: gen.ServeOptions = field(default_factory=gen.ServeOptions)
    """How the teacher's engine is started (its own tensor parallelism included)."""
    progress: bool = True
    """Show a progress bar on stderr."""

    def validate(self) -> None:
        if self.filter not in (None, *FILTERS):
            raise ValueError(f"filter must be one of {FILTERS} or None, got {self.filter!r}")
        if self.sampling.n > 1 and self.filter is None and not self.keep_truncated:
            logger.info(
                "n=%d without a filter: the first finished sample of each prompt is kept", self.sampling.n
            )
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be >= 1, got {self.limit}")


def attempts_path(out: Path) -> Path:
    """The per-prompt attempt log beside the demonstrations file."""
    return out.with_name(out.name + ".attempts.jsonl")


def prompt_key(prompt: RLPrompt) -> str:
    """The resume key: the record's `key`, or a hash of its prompt text."""
    if prompt.key is not None:
        return str(prompt.key)
    return "sha256:" + hashlib.sha256(prompt.prompt.encode("utf-8")).hexdigest()[:24]


def read_prompts(path: Path, limit: int | None) -> list[tuple[str, RLPrompt]]:
    """`(key, prompt)` in file order; a repeated explicit key is an error, a repeated prompt text
    without key is generated once."""
    out: list[tuple[str, RLPrompt]] = []
    seen: dict[str, str] = {}
    repeats = 0
    for where, record in iter_jsonl(path):
        prompt = parse_rl_prompt(record, where)
        key = prompt_key(prompt)
        if key in seen:
            if prompt.key is not None:
                raise DataError(f"{where}: key: {prompt.key!r} was already used at {seen[key]}")
            repeats += 1
            continue
        seen[key] = where
        out.append((key, prompt))
        if limit is not None and len(out) == limit:
            break
    if not out:
        raise DataError(f"{path}: no records")
    if repeats:
        logger.warning("%s: %d repeated prompts (same text, no key) are generated once", path, repeats)
    return out


def response_text(generation: Generation) -> str:
    """The teacher's answer without a reasoning block: students are trained with thinking off,
    so a teacher that thinks anyway contributes only what follows its `</think>`."""
    text = generation.text
    if text.lstrip().startswith("<think>") and "</think>" in text:
        text = text.split("</think>", 1)[1].lstrip("\n")
    return text


def choose(prompt: RLPrompt, samples: list[Generation], config: DemoConfig) -> tuple[str | None, dict]:
    """The first acceptable sample's response text (or None) and the prompt's counts."""
    truncated = sum(g.finish_reason == "length" for g in samples)
    passing, chosen = 0, None
    for generation in samples:
        text = response_text(generation)
        finished = config.keep_truncated or generation.finish_reason != "length"
        ok = config.filter is None or score(prompt, text, RewardMode(config.filter)) == 1.0
        passing += ok
        # A blank response is no demonstration (the schema rejects it), whatever its verdicts.
        if ok and finished and text.strip() and chosen is None:
            chosen = text
    return chosen, {
        "samples": len(samples),
        "passing": passing,
        "truncated": truncated,
        "kept": chosen is not None,
    }


def generate_demos(config: DemoConfig, engine=None) -> dict:
    """Run (or resume) the generation; return the summary counts. `engine`, when given, already
    serves `config.teacher` (a Hugging Face directory) and is left running."""
    config.validate()
    prompts = read_prompts(config.prompts, config.limit)
    log_path = attempts_path(config.out)
    gen.join_world(config.serve)
    if gen.is_writer():
        for path in (config.out, log_path):
            record_log.drop_partial_last_line(path)
    done = set(record_log.read_keys(config.out, "id")) | set(record_log.read_keys(log_path, "id"))
    pending = [i for i, (key, _) in enumerate(prompts) if key not in done]
    summary = {
        "prompts": len(prompts),
        "already_done": len(prompts) - len(pending),
        "generated": 0,
        "kept": 0,
        "rejected": 0,
        "samples": 0,
        "passing_samples": 0,
        "truncated_samples": 0,
    }
    if not pending:
        logger.info("all %d prompts already have demonstrations or attempts in %s", len(prompts), config.out)
        return _finish(summary, config)
    from megatron_uniapl.eval.model_source import servable_model_dir
    from megatron_uniapl.tokenizer import load_tokenizer

    with servable_model_dir(config.teacher) as (model_dir, _):
        own = engine is None
        if own:
            engine = gen.start_engine(model_dir, config.serve)
        try:
            # Only pending prompts are templated (a resumed large run skips most of the file).
            encoded = gen.encode_chats(
                load_tokenizer(model_dir),
                [[{"role": "user", "content": prompts[i][1].prompt}] for i in pending],
            )
            gen.check_lengths(
                encoded,
                [repr(prompts[i][0]) for i in pending],
                config.sampling.max_tokens,
                engine.config.max_model_len,
            )
            prompt_ids: list[list[int]] = [[] for _ in prompts]
            for i, ids in zip(pending, encoded):
                prompt_ids[i] = ids
            _run(engine, prompts, prompt_ids, done, config, log_path, summary)
        finally:
            if own:
                engine.shutdown()
    return _finish(summary, config)


def rejected_response(samples: list[Generation], config: DemoConfig) -> str | None:
    """The first finished, non-blank sample of a prompt that kept none (what a failing reference
    would be), or None."""
    for generation in samples:
        text = response_text(generation)
        if text.strip() and (config.keep_truncated or generation.finish_reason != "length"):
            return text
    return None


def _run(engine, prompts, prompt_ids, done, config: DemoConfig, log_path: Path, summary: dict) -> None:
    writer = gen.is_writer()
    demos = record_log.AppendLog(config.out) if writer else None
    attempts = record_log.AppendLog(log_path) if writer else None
    try:
        for indices, samples in gen.generate_in_batches(
            engine,
            prompt_ids,
            config.sampling,
            config.batch_size,
            skip=lambda i: prompts[i][0] in done,
            progress=config.progress,
            desc="demos",
        ):
            demo_records, attempt_records = [], []
            for index, generations in zip(indices, samples):
                key, prompt = prompts[index]
                chosen, counts = choose(prompt, generations, config)
                if chosen is not None:
                    demo_records.append({"prompt": prompt.prompt, "response": chosen, "id": key})
                attempt = {"id": key, **counts}
                if chosen is None:
                    attempt["rejected_response"] = rejected_response(generations, config)
                attempt_records.append(attempt)
                summary["generated"] += 1
                summary["kept" if chosen is not None else "rejected"] += 1
                summary["samples"] += counts["samples"]
                summary["passing_samples"] += counts["passing"]
                summary["truncated_samples"] += counts["truncated"]
            if writer:
                # Demonstrations first: a crash between the two writes leaves the key done in
                # the demonstrations file, so nothing is generated twice.
                demos.append(demo_records)
                attempts.append(attempt_records)
    finally:
        if writer:
            demos.close()
            attempts.close()


def _finish(summary: dict, config: DemoConfig) -> dict:
    """Add the totals over the whole file (earlier runs included) to this run's counts."""
    if gen.is_writer():
        keys = {key for key, _ in read_prompts(config.prompts, config.limit)}
        kept = record_log.read_keys(config.out, "id")
        summary["total_demonstrations"] = sum(1 for key in kept if key in keys)
        summary["total_without_demonstration"] = len(keys) - summary["total_demonstrations"]
        _record_run(config, summary)
    return summary


def _record_run(config: DemoConfig, summary: dict) -> None:
    from dataclasses import asdict

    from megatron_uniapl.data.manifest import append_run_record, sha256_file

    append_run_record(config.out, {
        "teacher": str(config.teacher), "prompts": str(config.prompts),
        "prompts_sha256": sha256_file(config.prompts), "filter": config.filter,
        "keep_truncated": config.keep_truncated, "limit": config.limit,
        "sampling": asdict(config.sampling), "summary": dict(summary),
    })


def build_parser() -> argparse.ArgumentParser:
    from megatron_uniapl.eval.run import add_serve_arguments

    parser = argparse.ArgumentParser(prog="generate_demos.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--teacher", type=Path, required=True, help="teacher model directory")
    parser.add_argument("--prompts", type=Path, required=True, help="RL-prompt / IFEval JSONL")
    parser.add_argument("--out", type=Path, required=True, help="demonstrations JSONL (appended, resumable)")
    parser.add_argument(
        "--filter", choices=FILTERS, default=None, help="keep only samples that satisfy all their constraints"
    )
    parser.add_argument("--n", type=int, default=1, help="samples per prompt (first acceptable is kept)")
    parser.add_argument("--max-tokens", type=int, default=2048)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--top-p", type=float, default=0.8)
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (prompt i uses seed + i)")
    parser.add_argument("--keep-truncated", action="store_true", help="accept samples cut at max-tokens")
    parser.add_argument("--batch-size", type=int, default=64, help="prompts per engine call and per flush")
    parser.add_argument("--limit", type=int, default=None, help="only the first N prompts")
    parser.add_argument("--no-progress", action="store_true")
    add_serve_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    from megatron_uniapl.eval.run import serve_options

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    sampling = SamplingConfig(
        n=args.n, temperature=args.temperature, top_p=args.top_p, max_tokens=args.max_tokens, seed=args.seed
    )
    config = DemoConfig(
        args.teacher,
        args.prompts,
        args.out,
        args.filter,
        sampling,
        args.keep_truncated,
        args.batch_size,
        args.limit,
        serve_options(args),
        not args.no_progress,
    )
    try:
        summary = generate_demos(config)
    except (DataError, gen.ServeError, ValueError) as err:
        print(f"generate_demos: {err}")
        return 2
    if gen.is_writer():
        print(" ".join(f"{name}={value}" for name, value in summary.items()))
        print(f"demonstrations: {args.out}; attempts: {attempts_path(args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
