"""`tools/convert_hf.py`: move Qwen3 checkpoints between Hugging Face and Megatron-Core formats.

    import  --hf-dir HF --out-dir MCORE [--tp N] [--pp M] [--dtype D] [--overwrite]
    export  --mcore-dir MCORE --out-dir HF2 [--tp N] [--pp M] [--overwrite]
    verify  --hf-dir HF --mcore-dir MCORE [--tp N] [--pp M] [--tol T]

Everything a user can get wrong is checked here, in one process, before any worker starts: the
config is Qwen3, the safetensors hold exactly the tensors of that config with the right shapes,
the tokenizer fits the vocabulary, and the output directory does not already hold a checkpoint.
The work itself runs on TP x PP ranks (spawned on the CPU over gloo, or under torchrun), each
holding one shard, so memory per process is about one shard.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path

from megatron_uniapl import parallel
from megatron_uniapl.config.model import ModelOptions
from megatron_uniapl.convert import mcore_checkpoint as ckpt
from megatron_uniapl.convert.hf_io import CheckpointMismatchError, HFCheckpointReader
from megatron_uniapl.convert.qwen3 import expected_hf_shapes
from megatron_uniapl.model.hf_config import (
    UnsupportedModelError,
    load_qwen3_arch,
    parse_qwen3_config,
)
from megatron_uniapl.tokenizer import check_vocab, has_tokenizer, load_tokenizer

logger = logging.getLogger("convert_hf")

USER_ERRORS = (
    UnsupportedModelError, CheckpointMismatchError, ckpt.CheckpointExistsError,
    ckpt.IncompleteCheckpointError, FileNotFoundError, ValueError, parallel.WorkerError,
)


def _options(args, dtype: str) -> ModelOptions:
    return ModelOptions(
        tensor_parallel=args.tp, pipeline_parallel=args.pp, dtype=dtype, spec="portable",
        use_cpu_initialization=True, perform_initialization=False,
    )


def check_hf_dir(hf_dir: str):
    """Validate a HF Qwen3 directory; returns (arch, config dict)."""
    arch = load_qwen3_arch(hf_dir)
    with HFCheckpointReader(hf_dir) as reader:
        # Some tied checkpoints also store lm_head (a copy of the embedding): tolerated, unused.
        reader.check(expected_hf_shapes(arch), allow_extra=["lm_head.weight"] if arch.tie_word_embeddings else [])
    if has_tokenizer(hf_dir):
        check_vocab(load_tokenizer(hf_dir).vocab_size, arch.vocab_size, where=str(hf_dir))
    else:
        logger.warning("%s has no tokenizer files: the tokenizer/vocabulary check was skipped", hf_dir)
    return arch, json.loads((Path(hf_dir) / "config.json").read_text())


def _hf_dtype(config: dict) -> str:
    dtype = config.get("dtype") or config.get("torch_dtype") or "bfloat16"
    return dtype if dtype in ("float32", "bfloat16", "float16") else "bfloat16"


def cmd_import(args) -> int:
    from megatron_uniapl.convert.workers import import_worker

    arch, config = check_hf_dir(args.hf_dir)
    ckpt.check_output_dir(args.out_dir, args.overwrite)
    options = _options(args, args.dtype or _hf_dtype(config))
    options.validate()
    logger.info(
        "importing %s (%.2fB parameters) at TP=%d PP=%d, %s", args.hf_dir, arch.num_parameters / 1e9,
        args.tp, args.pp, options.dtype,
    )
    parallel.run_world(import_worker, args.tp * args.pp, args.hf_dir, args.out_dir, config, options, ckpt.new_token())
    logger.info("wrote %s", args.out_dir)
    return 0


def cmd_export(args) -> int:
    from megatron_uniapl.convert.workers import export_worker

    meta = ckpt.check_complete(args.mcore_dir)
    parse_qwen3_config(meta.hf_config, where=f"{args.mcore_dir}/{ckpt.META_NAME}")
    ckpt.check_output_dir(args.out_dir, args.overwrite)
    options = _options(args, meta.dtype)
    options.validate()
    if not meta.has_tokenizer:
        logger.warning("%s holds no tokenizer files; the export will have none either", args.mcore_dir)
    parallel.run_world(
        export_worker, args.tp * args.pp, args.mcore_dir, args.out_dir, options, ckpt.new_token(),
        int(args.shard_gib * 2**30),
    )
    logger.info("wrote %s", args.out_dir)
    return 0


def cmd_verify(args) -> int:
    import torch

    from megatron_uniapl import cpu_support
    from megatron_uniapl.convert.workers import verify_worker

    arch, _ = check_hf_dir(args.hf_dir)
    meta = ckpt.check_complete(args.mcore_dir)
    if parse_qwen3_config(meta.hf_config) != arch:
        raise ValueError(f"{args.mcore_dir} holds a different architecture than {args.hf_dir}/config.json")
    generator = torch.Generator().manual_seed(args.seed)
    ids = torch.randint(0, min(arch.vocab_size, 151_000), (args.batch, args.seq_len), generator=generator)
    options = _options(args, "float32")
    with tempfile.TemporaryDirectory() as tmp:
        result = str(Path(tmp) / "logits.pt")
        parallel.run_world(verify_worker, args.tp * args.pp, args.hf_dir, args.mcore_dir, options, ids.tolist(), result)
        megatron_logits = torch.load(result)
    cpu_support.enable()
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(args.hf_dir, dtype=torch.float32)
    with torch.no_grad():
        hf_logits = hf(ids).logits.float()
    max_diff = (megatron_logits - hf_logits).abs().max().item()
    log_p = torch.log_softmax(hf_logits, -1)
    log_q = torch.log_softmax(megatron_logits, -1)
    kl = (log_p.exp() * (log_p - log_q)).sum(-1).mean().item()
    ok = max_diff <= args.tol
    print(f"max_abs_logit_diff={max_diff:.3e} kl(hf||megatron)={kl:.3e} tol={args.tol:g} -> {'OK' if ok else 'FAIL'}")
    return 0 if ok else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="convert_hf.py", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def layout(p):
        p.add_argument("--tp", type=int, default=1, help="tensor-parallel size of the worker layout")
        p.add_argument("--pp", type=int, default=1, help="pipeline-parallel size of the worker layout")

    p = sub.add_parser("import", help="HF safetensors -> Megatron distributed checkpoint")
    p.add_argument("--hf-dir", required=True)
    p.add_argument("--out-dir", required=True)
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], help="default: the HF config's dtype")
    p.add_argument("--overwrite", action="store_true", help="replace an existing checkpoint in --out-dir")
    layout(p)
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("export", help="Megatron distributed checkpoint -> HF safetensors")
    p.add_argument("--mcore-dir", required=True)
    p.add_argument("--out-dir", required=True)
    p.add_argument("--shard-gib", type=float, default=4.0, help="maximum size of one safetensors file")
    p.add_argument("--overwrite", action="store_true")
    layout(p)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("verify", help="compare Megatron and HF logits on fixed token ids")
    p.add_argument("--hf-dir", required=True)
    p.add_argument("--mcore-dir", required=True)
    p.add_argument("--tol", type=float, default=1e-4, help="maximum allowed absolute logit difference")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--seq-len", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    layout(p)
    p.set_defaults(func=cmd_verify)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except USER_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
