"""Evaluate one study checkpoint on the held-out set: greedy and sampled, one engine for both.

    python -m megatron_uniapl.study.evaluate --model CKPT --eval-file eval.jsonl --out DIR --seed S

Writes DIR/greedy/ and DIR/sampled/ in `tools/eval.py`'s format (results.json, results.md,
responses.jsonl). Run as its own process by the study driver so that vLLM and the exported
model never linger in the driver. Starting the CPU engine takes longer than both passes over
120 prompts, hence one engine for both.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from megatron_uniapl.config.rollout import SamplingConfig
from megatron_uniapl.eval.model_source import servable_model_dir
from megatron_uniapl.eval.run import (
    EvalConfig,
    evaluate_with_engine,
    load_prompts,
    write_outputs,
)
from megatron_uniapl.rollout import chat_generation as gen

logger = logging.getLogger(__name__)

MAX_TOKENS = 64
"""Response budget, as in training: the longest ideal answer is 43 tokens of the study tokenizer."""
MAX_MODEL_LEN = 160
"""Prompt (<= 60 tokens) plus response, with room to spare."""


def modes(seed: int) -> dict[str, SamplingConfig]:
    """The two decodings: greedy, and sampling at the training temperature (1.0) with `seed`."""
    return {"greedy": SamplingConfig(temperature=0.0, max_tokens=MAX_TOKENS),
            "sampled": SamplingConfig(temperature=1.0, max_tokens=MAX_TOKENS, seed=seed)}


def evaluate_checkpoint(model: Path, eval_file: Path, out_dir: Path, seed: int) -> dict[str, dict]:
    """Both evaluations of `model` (HF directory or Megatron checkpoint); mode -> results."""
    prompts = load_prompts(eval_file, None)
    serve = gen.ServeOptions(dtype="float32", max_model_len=MAX_MODEL_LEN, kv_cache_gib=0.0625,
                             seed=seed, enforce_eager=True)
    out: dict[str, dict] = {}
    with servable_model_dir(model) as (model_dir, _fmt):
        engine = gen.start_engine(model_dir, serve)
        try:
            for mode, sampling in modes(seed).items():
                config = EvalConfig(model=model, eval_file=eval_file, out_dir=out_dir / mode, sampling=sampling,
                                    serve=serve, progress=False)
                outcome = evaluate_with_engine(engine, model_dir, prompts, config)
                write_outputs(config.out_dir, prompts, outcome)
                out[mode] = outcome["results"]
                logger.info("%s %s: prompt strict %.3f, instruction strict %.3f", model, mode,
                            outcome["results"]["prompt_strict"], outcome["results"]["instruction_strict"])
        finally:
            engine.shutdown()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="evaluate a study checkpoint, greedy and sampled")
    parser.add_argument("--model", type=Path, required=True, help="HF model dir or Megatron checkpoint dir")
    parser.add_argument("--eval-file", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0, help="sampling seed")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    evaluate_checkpoint(args.model, args.eval_file, args.out, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
