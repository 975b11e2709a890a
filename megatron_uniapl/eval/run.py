"""`tools/eval.py`: IFEval accuracy of a model, generated through the rollout engine.

    python tools/eval.py --model DIR --eval-file ifeval.jsonl --out results/ [--limit N]

The model is a Hugging Face directory or a Megatron checkpoint of this project (exported to a
temporary Hugging Face directory first). Prompts are templated exactly as rollouts are (Qwen3
chat template, thinking off) and decoded greedily unless sampling options are given, so the
score is that of the policy the trainer would roll out. The responses are scored by the same
constraint checkers that reward training (`eval/ifeval.py`), and three files are written:
- `responses.jsonl`: IFEval's response format, `{"prompt", "response"}` per line, in eval-file
  order (readable by `python -m megatron_uniapl.eval.ifeval` and, as the policy side, by
  `tools/analyze.py`);
- `results.json`: the four accuracies, the per-type table, the run's settings and, per prompt,
  its key, verdicts, finish reason and response length;
- `results.md`: the same accuracies as markdown tables.
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from megatron_uniapl.config.rollout import SamplingConfig
from megatron_uniapl.data.jsonl import DataError
from megatron_uniapl.data.schemas import EvalPrompt, read_eval_set
from megatron_uniapl.eval.ifeval import evaluate
from megatron_uniapl.eval.model_source import servable_model_dir
from megatron_uniapl.eval.tables import results_markdown
from megatron_uniapl.rewards.verify import follow_list
from megatron_uniapl.rollout import chat_generation as gen

logger = logging.getLogger(__name__)


@dataclass
class EvalConfig:
    """One evaluation run."""

    model: Path
    """Hugging Face model directory, or Megatron checkpoint directory (with uniapl_model.json)."""
    eval_file: Path
    """IFEval-format JSONL (key, prompt, instruction_id_list, kwargs)."""
    out_dir: Path
    """Where results.json, results.md and responses.jsonl are written."""
    limit: int | None = None
    """Evaluate only the first N prompts of the file (the whole file is still validated)."""
    sampling: SamplingConfig = field(default_factory=lambda: SamplingConfig(temperature=0.0, max_tokens=1280))
    """Decoding; greedy by default. `n` must be 1 (one response per prompt, as IFEval scores)."""
    batch_size: int = 64
    """Prompts per engine call (each call's responses are scored and reported together)."""
    serve: gen.ServeOptions = field(default_factory=gen.ServeOptions)
    """How the engine is started."""
    progress: bool = True
    """Show a progress bar on stderr."""


def load_prompts(path: Path, limit: int | None) -> list[EvalPrompt]:
    """The evaluation prompts (validated, file:line errors), the first `limit` of them if given."""
    if limit is not None and limit < 1:
        raise ValueError(f"--limit must be >= 1, got {limit}")
    prompts = read_eval_set(path)
    return prompts[:limit] if limit is not None else prompts


def _chat(prompt: EvalPrompt) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompt.prompt}]


def evaluate_with_engine(engine, model_dir: Path, prompts: list[EvalPrompt], config: EvalConfig) -> dict:
    """Generate one response per prompt with `engine` (serving `model_dir`) and score them."""
    from megatron_uniapl.tokenizer import load_tokenizer

    if config.sampling.n != 1:
        raise ValueError(
            f"sampling.n must be 1 for IFEval (one response per prompt), got {config.sampling.n}"
        )
    tokenizer = load_tokenizer(model_dir)
    prompt_ids = gen.encode_chats(tokenizer, [_chat(p) for p in prompts])
    gen.check_lengths(
        prompt_ids, [repr(p.key) for p in prompts], config.sampling.max_tokens, engine.config.max_model_len
    )
    responses: list[str] = [""] * len(prompts)
    finish: list[str] = [""] * len(prompts)
    lengths: list[int] = [0] * len(prompts)
    start = time.perf_counter()
    for indices, samples in gen.generate_in_batches(
        engine, prompt_ids, config.sampling, config.batch_size, progress=config.progress, desc="eval"
    ):
        for index, (generation,) in zip(indices, samples):
            responses[index] = generation.text
            finish[index] = generation.finish_reason
            lengths[index] = len(generation.token_ids)
    seconds = time.perf_counter() - start
    report = evaluate(prompts, responses)
    per_prompt = [
        {
            "key": p.key,
            "instruction_id_list": list(p.instruction_id_list),
            "strict": follow_list(p.constraints, r, False),
            "loose": follow_list(p.constraints, r, True),
            "finish_reason": f,
            "num_tokens": n,
        }
        for p, r, f, n in zip(prompts, responses, finish, lengths)
    ]
    results = {
        **report.to_dict(),
        "model": str(config.model),
        "eval_file": str(config.eval_file),
        "limit": config.limit,
        "sampling": asdict(config.sampling),
        "max_model_len": engine.config.max_model_len,
        "finish_reasons": dict(collections.Counter(finish)),
        "mean_response_tokens": sum(lengths) / len(lengths),
        "generate_seconds": round(seconds, 3),
        "per_prompt": per_prompt,
    }
    return {"results": results, "responses": responses}


def write_outputs(out_dir: Path, prompts: list[EvalPrompt], outcome: dict) -> None:
    """results.json, results.md and responses.jsonl under `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    results = outcome["results"]
    with (out_dir / "responses.jsonl").open("w", encoding="utf-8") as f:
        for prompt, response in zip(prompts, outcome["responses"]):
            f.write(json.dumps({"prompt": prompt.prompt, "response": response}, ensure_ascii=False) + "\n")
    (out_dir / "results.json").write_text(
        json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    (out_dir / "results.md").write_text(results_markdown(results), encoding="utf-8")


def run_eval(config: EvalConfig, engine=None) -> dict:
    """Evaluate and write the outputs; returns results.json's content.

    `engine`, when given, must already serve `config.model` (a Hugging Face directory); it is
    left running. Otherwise an engine is started for the run and shut down after it."""
    prompts = load_prompts(config.eval_file, config.limit)
    with servable_model_dir(config.model) as (model_dir, fmt):
        own = engine is None
        if own:
            engine = gen.start_engine(model_dir, config.serve)
        try:
            outcome = evaluate_with_engine(engine, model_dir, prompts, config)
        finally:
            if own:
                engine.shutdown()
    outcome["results"]["model_format"] = fmt
    if gen.is_writer():
        write_outputs(config.out_dir, prompts, outcome)
    return outcome["results"]


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """Engine options shared by the tools (see `ServeOptions`)."""
    group = parser.add_argument_group("engine")
    group.add_argument(
        "--tp", type=int, default=1, help="vLLM tensor parallelism (run under torchrun with as many ranks)"
    )
    group.add_argument("--dtype", default="auto", help="auto, bfloat16, float16 or float32")
    group.add_argument(
        "--max-model-len",
        type=int,
        default=None,
        help="prompt + response tokens (default: the model's, at most 8192)",
    )
    group.add_argument("--kv-cache-gib", type=float, default=None, help="KV cache size (default on CPU: 0.5)")
    group.add_argument("--gpu-memory-utilization", type=float, default=0.85)


def serve_options(args: argparse.Namespace) -> gen.ServeOptions:
    return gen.ServeOptions(
        tensor_parallel_size=args.tp,
        dtype=args.dtype,
        max_model_len=args.max_model_len,
        kv_cache_gib=args.kv_cache_gib,
        gpu_memory_utilization=args.gpu_memory_utilization,
        seed=args.seed,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="eval.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="HF model dir or Megatron checkpoint dir")
    parser.add_argument("--eval-file", type=Path, required=True, help="IFEval-format JSONL")
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument("--limit", type=int, default=None, help="only the first N prompts")
    parser.add_argument("--max-tokens", type=int, default=1280, help="response tokens at most")
    parser.add_argument("--temperature", type=float, default=0.0, help="0: greedy (default)")
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (prompt i uses seed + i)")
    parser.add_argument("--batch-size", type=int, default=64, help="prompts per engine call")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_serve_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    sampling = SamplingConfig(
        temperature=args.temperature, top_p=args.top_p, max_tokens=args.max_tokens, seed=args.seed
    )
    config = EvalConfig(
        args.model,
        args.eval_file,
        args.out,
        args.limit,
        sampling,
        args.batch_size,
        serve_options(args),
        not args.no_progress,
    )
    try:
        results = run_eval(config)
    except (DataError, gen.ServeError, ValueError) as err:
        print(f"eval: {err}")
        return 2
    if gen.is_writer():
        print(
            f"{results['num_prompts']} prompts, {results['num_instructions']} instructions "
            f"({results['model_format']} model {args.model})"
        )
        print(f"prompt-level      strict {results['prompt_strict']:.4f}  loose {results['prompt_loose']:.4f}")
        print(
            f"instruction-level strict {results['instruction_strict']:.4f}  "
            f"loose {results['instruction_loose']:.4f}"
        )
        print(f"wrote {args.out / 'results.json'}, results.md, responses.jsonl")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
