"""The models a CPU rehearsal trains and scores with, made on the fly from the recipe's model.

The policy keeps what makes a layout valid or not: the recipe model's attention and KV head
counts (so GQA and every TP split stay what they are at full size), its tying of embeddings, its
RoPE, and the real vocabulary and tokenizer. It shrinks what a CPU cannot hold: hidden size 64,
MLP width 128, head_dim 32 (vLLM's CPU attention needs >= 32), and two layers per pipeline stage
(per virtual stage when interleaved). The frozen discriminator is a tiny random
`Qwen3ForSequenceClassification` with one output (a reward head) and the real tokenizer.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from megatron_uniapl.config import RunConfig
from megatron_uniapl.model.hf_config import Qwen3Arch, parse_qwen3_config

WIDTH = {"hidden_size": 64, "intermediate_size": 128, "head_dim": 32}
"""The shrunk widths (head counts are kept)."""
LAYERS_PER_STAGE = 2


def recipe_arch(config: RunConfig) -> Qwen3Arch:
    """The full-size architecture the recipe trains (`plan.arch`, else `model.hf_dir/config.json`)."""
    from megatron_uniapl.planning.plan import arch_for

    return arch_for(config)


def tiny_overrides(arch: Qwen3Arch, pipeline_stages: int) -> dict:
    """`transformers.Qwen3Config` fields of the rehearsal policy for `arch` at `pipeline_stages`
    (pipeline parallel x virtual stages)."""
    return dict(
        **WIDTH,
        num_hidden_layers=LAYERS_PER_STAGE * pipeline_stages,
        num_attention_heads=arch.num_attention_heads,
        num_key_value_heads=arch.num_key_value_heads,
        tie_word_embeddings=arch.tie_word_embeddings,
        rope_theta=arch.rope_theta,
        rms_norm_eps=arch.rms_norm_eps,
        vocab_size=arch.vocab_size,
    )


def make_policy(out_dir: Path, arch: Qwen3Arch, pipeline_stages: int, dtype: str, seed: int) -> Path:
    """The tiny policy (HF safetensors in `dtype`, with the tokenizer) in `out_dir`; reused if there."""
    from megatron_uniapl.model.tiny import create_tiny_qwen3

    if (out_dir / "config.json").is_file():
        return out_dir
    stage = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(stage, ignore_errors=True)
    create_tiny_qwen3(stage, seed=seed, torch_dtype=dtype, **tiny_overrides(arch, pipeline_stages))
    if dtype != "float32":  # create_tiny_qwen3 saves float32 weights; the engine loads "auto"
        _cast_checkpoint(stage, dtype)
    stage.rename(out_dir)
    parse_qwen3_config(json.loads((out_dir / "config.json").read_text()), where=str(out_dir))
    return out_dir


def _cast_checkpoint(model_dir: Path, dtype: str) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    for path in model_dir.glob("*.safetensors"):
        tensors = {k: v.to(getattr(torch, dtype)).contiguous() for k, v in load_file(path).items()}
        save_file(tensors, path, metadata={"format": "pt"})
    config = json.loads((model_dir / "config.json").read_text())
    config["torch_dtype"] = dtype
    config["dtype"] = dtype
    (model_dir / "config.json").write_text(json.dumps(config, indent=2))


def make_classifier(out_dir: Path, seed: int) -> Path:
    """A tiny random reward model (one output) with the real tokenizer in `out_dir`; reused if there."""
    import torch
    from transformers import Qwen3ForSequenceClassification

    from megatron_uniapl.assets import TOKENIZER_FILES, qwen3_tokenizer_dir
    from megatron_uniapl.model.tiny import tiny_qwen3_config

    if (out_dir / "config.json").is_file():
        return out_dir
    stage = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(stage, ignore_errors=True)
    config = tiny_qwen3_config(num_labels=1, architectures=["Qwen3ForSequenceClassification"])
    torch.manual_seed(seed)
    Qwen3ForSequenceClassification(config).save_pretrained(stage, safe_serialization=True)
    for name in TOKENIZER_FILES:
        shutil.copyfile(qwen3_tokenizer_dir() / name, stage / name)
    stage.rename(out_dir)
    return out_dir
