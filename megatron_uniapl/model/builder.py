"""Build Qwen3 dense models on Megatron-Core from a Hugging Face architecture description.

We build on `GPTModel` deliberately: megatron-core 0.19 marks it deprecated in favour of
`HybridModel`, but for a dense attention-only transformer GPTModel is the complete, stable path
(pipeline stages, tied embeddings across stages, distributed checkpoints, packed sequences) and
takes only critical fixes, which is what a training framework wants from its foundation. Its
deprecation banner is silenced here; revisit when HybridModel covers dense models with identical
checkpoint keys.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F

from megatron_uniapl.config.model import ModelOptions
from megatron_uniapl.model.hf_config import Qwen3Arch
from megatron_uniapl.model.spec import layer_spec, portable_block_spec

logger = logging.getLogger(__name__)


def qwen3_transformer_config(arch: Qwen3Arch, options: ModelOptions):
    """The Megatron `TransformerConfig` that computes exactly what HF's Qwen3 computes."""
    from megatron.core.transformer.transformer_config import TransformerConfig

    options.validate()
    if arch.num_key_value_heads % options.tensor_parallel:
        raise ValueError(
            f"tensor_parallel={options.tensor_parallel} must divide num_key_value_heads={arch.num_key_value_heads}"
        )
    if arch.vocab_size % options.tensor_parallel:
        raise ValueError(f"tensor_parallel={options.tensor_parallel} must divide vocab_size={arch.vocab_size}")
    if arch.num_layers % options.pipeline_parallel:
        raise ValueError(
            f"pipeline_parallel={options.pipeline_parallel} must divide num_layers={arch.num_layers}"
        )
    dtype = options.torch_dtype
    return TransformerConfig(
        num_layers=arch.num_layers,
        hidden_size=arch.hidden_size,
        ffn_hidden_size=arch.intermediate_size,
        num_attention_heads=arch.num_attention_heads,
        num_query_groups=arch.num_key_value_heads,
        kv_channels=arch.head_dim,
        normalization="RMSNorm",
        layernorm_epsilon=arch.rms_norm_eps,
        qk_layernorm=True,
        gated_linear_unit=True,
        activation_func=F.silu,
        add_bias_linear=False,
        add_qkv_bias=False,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        init_method_std=options.init_std,
        tensor_model_parallel_size=options.tensor_parallel,
        pipeline_model_parallel_size=options.pipeline_parallel,
        virtual_pipeline_model_parallel_size=options.virtual_pipeline_stages,
        context_parallel_size=options.context_parallel,
        sequence_parallel=options.sequence_parallel,
        params_dtype=dtype,
        pipeline_dtype=dtype,
        bf16=dtype == torch.bfloat16,
        fp16=dtype == torch.float16,
        fp8=options.fp8,
        fp8_recipe=options.fp8_recipe if options.fp8 else "delayed",
        # Fusions need CUDA kernels (or Apex); the unfused paths are exact everywhere.
        bias_activation_fusion=False,
        masked_softmax_fusion=False,
        persist_layer_norm=False,
        bias_dropout_fusion=False,
        apply_rope_fusion=False,
        gradient_accumulation_fusion=False,
        # Micro-batches of packed rollouts have different lengths, so pipeline stages exchange
        # shapes first. Megatron's interleaved schedule deadlocked doing that over gloo here, so
        # interleaved pipelines run with fixed micro-batch shapes (the trainer pads to one length).
        variable_seq_lengths=options.virtual_pipeline_stages is None,
        # Over gloo (CPU), batched p2p swaps activation and gradient messages of interleaved
        # pipelines silently (docs/platform_notes.md); unbatched p2p is exact. NCCL is fine batched.
        batch_p2p_comm=torch.cuda.is_available(),
        # Our losses normalize by global token counts themselves (see model/pipeline.py), so
        # Megatron must not rescale by micro-batch count or data-parallel size.
        calculate_per_token_loss=True,
        # Dense model: no experts. Set only because the config validator rejects variable
        # sequence lengths with the default (allgather) MoE dispatcher even without MoE.
        moe_token_dispatcher_type="alltoall",
        use_cpu_initialization=options.use_cpu_initialization,
        perform_initialization=options.perform_initialization,
        recompute_granularity="full" if options.recompute_activations else None,
        recompute_method="uniform" if options.recompute_activations else None,
        recompute_num_layers=1 if options.recompute_activations else None,
    )


def build_qwen3_model(
    arch: Qwen3Arch,
    options: ModelOptions,
    pre_process: bool | None = None,
    post_process: bool | None = None,
    vp_stage: int | None = None,
):
    """One pipeline stage (or the whole model at PP=1) of Qwen3 as a Megatron `GPTModel`.

    Needs Megatron's parallel state initialized (`megatron_uniapl.parallel.initialize`).
    Returns the model in `options.dtype`, on the current device.
    """
    from megatron.core import parallel_state
    from megatron.core.models.gpt.gpt_model import GPTModel

    from megatron.core.transformer.transformer_block import get_num_layers_to_build

    config = qwen3_transformer_config(arch, options)
    spec_name, spec = layer_spec(options)
    if spec_name == "portable":
        spec = portable_block_spec(spec, get_num_layers_to_build(config, vp_stage=vp_stage))
    if pre_process is None:
        pre_process = parallel_state.is_pipeline_first_stage(ignore_virtual=False, vp_stage=vp_stage)
    if post_process is None:
        post_process = parallel_state.is_pipeline_last_stage(ignore_virtual=False, vp_stage=vp_stage)
    gpt_logger = logging.getLogger("megatron.core.models.gpt.gpt_model")
    level = gpt_logger.level
    gpt_logger.setLevel(logging.ERROR)  # the GPTModel deprecation banner; see module docstring
    try:
        model = GPTModel(
            config=config,
            transformer_layer_spec=spec,
            vocab_size=arch.vocab_size,
            max_sequence_length=arch.max_position_embeddings,
            pre_process=pre_process,
            post_process=post_process,
            parallel_output=True,
            share_embeddings_and_output_weights=arch.tie_word_embeddings,
            position_embedding_type="rope",
            rotary_percent=1.0,
            rotary_base=int(arch.rope_theta) if float(arch.rope_theta).is_integer() else arch.rope_theta,
            vp_stage=vp_stage,
        )
    finally:
        gpt_logger.setLevel(level)
    model.uniapl_spec = spec_name
    device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    return model.to(device=device, dtype=config.params_dtype)
