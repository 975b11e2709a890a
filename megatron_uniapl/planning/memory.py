"""Memory per GPU of a Qwen3 training rank with a co-located vLLM engine, by arithmetic.

Many-node layouts cannot be tried here, so each recipe's layout is planned by this model and the
model is checked by hand in tests/test_scaling.py. All sizes are bytes. Notation: h hidden, f MLP
width, q = heads * head_dim, k = kv_heads * head_dim, L layers, V vocabulary; t, p, c, d the
tensor-, pipeline-, context- and data-parallel sizes; T tokens of one micro-batch (packed).

Parameters of the largest pipeline stage, per GPU (Megatron splits layers evenly; the first
stage also holds the embedding, the last the output layer, also when tied and p > 1, where
Megatron keeps a copy):

    layer  = h*q + 2*h*k + q*h + 3*h*f + 2*h + 2*head_dim      (per_layer_params)
    stage  = (ceil(L / p) * layer + V*h * (1 if p == 1 and tied, 2 if p == 1 untied, else 1) + h) / t
    (the final norm's h is counted on every stage: a small upper bound)

Model state, bytes per parameter (bf16 weights, fp32 gradient buffer, Adam in fp32):

    weights 2, gradients 4 (grad_bytes), optimizer 12 = fp32 master + m + v,
    sharded over the d * c data-parallel ranks by the distributed optimizer, else not sharded.

Activations kept for backward, elements per token per layer (bf16, 2 bytes each), counted from
the Qwen3 layer with flash attention (no s^2 term) and no dropout:

    attention: input norm h, QKV input h, q/k-norm inputs q + k, attention inputs q + 2k,
               attention output q                                      = 2h + 3q + 3k
    MLP:       input norm h, fc1 input h, SwiGLU input 2f, fc2 input f  = 2h + 3f

The 4h norm/residual-stream terms are split by t only with sequence parallelism, the rest always
by t; everything by c. Full recompute keeps only each layer's input (h / t with SP) plus one
layer's full activations while it is recomputed. With 1F1B the first pipeline stage holds
min(p, micro-batches) micro-batches in flight. The last stage also holds one micro-batch's logits
and the loss's work on them, `LOGIT_BYTES` = 2 + 18 = 20 bytes per token and vocabulary entry
(split by t): the bf16 logits kept for backward, plus the peak of the float32 temporaries of the
vocabulary-parallel log-prob and entropy (forward and backward, the bf16 logit gradient included),
measured in tests/test_scaling.py. At 4B with TP 2 and 8192-token micro-batches that is 12.4 GB,
three times what "bf16 logits plus one fp32 copy" would say.

The co-located engine: vLLM takes `gpu_memory_utilization` of the device when awake; its bf16
weights, 2 * params / engine TP, come out of that share and the rest is KV cache. With sleep
mode, training and generation alternate: during generation the trainer keeps only its bf16
weights (gradients and optimizer state are offloaded, colocation/offload.py), during training the
engine holds nothing. Without sleep mode both are resident at once. A fixed `overhead` covers the
CUDA context, NCCL buffers and allocator fragmentation, plus `resident_bytes` of anything else kept
on the GPU in both phases (a frozen discriminator). With p > 1 the first stage's in-flight
activations and the last stage's logits are added together: an upper bound.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from megatron_uniapl.model.hf_config import Qwen3Arch

GiB = 1024**3
LOSS_TEMPORARY_BYTES = 18
"""Peak float32 temporaries of the log-prob/entropy loss per logit element (measured)."""
LOGIT_BYTES = 2 + LOSS_TEMPORARY_BYTES
"""Bytes per token and vocabulary entry of the last stage's logits and their loss."""


@dataclass(frozen=True)
class Layout:
    """A parallel layout and the training shapes that set activation memory."""

    tp: int = 1
    """Tensor-parallel size."""
    pp: int = 1
    """Pipeline-parallel size."""
    cp: int = 1
    """Context-parallel size."""
    dp: int = 1
    """Data-parallel size (world / (tp * pp * cp))."""
    micro_batch_tokens: int = 8192
    """Tokens of one packed micro-batch."""
    num_microbatches: int = 1
    """Micro-batches per optimizer step on each data-parallel rank."""
    sequence_parallel: bool = False
    """Megatron sequence parallelism (splits the norm/residual activations by tp)."""
    recompute: bool = False
    """Full activation recompute of every layer."""
    distributed_optimizer: bool = True
    """Optimizer state sharded over data-parallel ranks."""
    grad_bytes: int = 4
    """Bytes per gradient element (4: fp32 main grads; 2: bf16 gradient reduction)."""
    vllm_memory_fraction: float = 0.5
    """vLLM's gpu_memory_utilization."""
    vllm_sleep: bool = True
    """The engine releases its memory during training (sleep mode)."""
    engine_tp: int = 1
    """The engine's tensor parallelism (its weights are split over that many GPUs)."""
    overhead_bytes: int = 3 * GiB
    """CUDA context, NCCL buffers and fragmentation."""
    resident_bytes: float = 0.0
    """Other memory held in both phases (e.g. a frozen discriminator on the GPU)."""

    @property
    def world(self) -> int:
        return self.tp * self.pp * self.cp * self.dp


def per_layer_params(arch: Qwen3Arch) -> int:
    """Parameters of one transformer layer (attention, q/k norms, MLP, two RMSNorms)."""
    h, f = arch.hidden_size, arch.intermediate_size
    q, k = arch.num_attention_heads * arch.head_dim, arch.num_key_value_heads * arch.head_dim
    return h * q + 2 * h * k + q * h + 3 * h * f + 2 * h + 2 * arch.head_dim


def stage_params_per_gpu(arch: Qwen3Arch, layout: Layout) -> float:
    """Parameters on one GPU of the largest pipeline stage (formula in the module docstring)."""
    layers = math.ceil(arch.num_layers / layout.pp)
    embedding = arch.vocab_size * arch.hidden_size
    if layout.pp == 1:
        vocab_tables = 1 if arch.tie_word_embeddings else 2
    else:
        vocab_tables = 1  # first stage: embedding; last stage: output layer (a copy when tied)
    return (layers * per_layer_params(arch) + vocab_tables * embedding + arch.hidden_size) / layout.tp


def activation_bytes_per_token_layer(arch: Qwen3Arch, layout: Layout) -> float:
    """Bytes kept for backward per token per layer without recompute (module docstring)."""
    h, f = arch.hidden_size, arch.intermediate_size
    q, k = arch.num_attention_heads * arch.head_dim, arch.num_key_value_heads * arch.head_dim
    stream = 4 * h / (layout.tp if layout.sequence_parallel else 1)
    split = (3 * q + 3 * k + 3 * f) / layout.tp
    return 2.0 * (stream + split) / layout.cp


@dataclass(frozen=True)
class MemoryBreakdown:
    """Bytes per GPU, by kind; `peak` is the larger of the training and the generation phase."""

    weights: float
    """bf16 parameters."""
    gradients: float
    """Gradient buffer."""
    optimizer: float
    """fp32 master weights and Adam moments (sharded with the distributed optimizer)."""
    activations: float
    """Activations kept for backward on the busiest stage, logits included."""
    vllm: float
    """The engine's share while it is awake."""
    vllm_weights: float
    """The engine's bf16 weights on this GPU, part of `vllm` (the rest is KV cache)."""
    overhead: float
    """Fixed overhead plus other resident memory (Layout.resident_bytes)."""
    train_phase: float
    """Resident while training."""
    generate_phase: float
    """Resident while generating."""

    @property
    def peak(self) -> float:
        return max(self.train_phase, self.generate_phase)

    def lines(self) -> list[str]:
        """One 'name: X.X GiB' line per entry, for YAML comments and reports."""
        names = ("weights", "gradients", "optimizer", "activations", "vllm", "overhead", "train_phase",
                 "generate_phase")
        return [f"{n}: {getattr(self, n) / GiB:.1f} GiB" for n in names] + [f"peak: {self.peak / GiB:.1f} GiB"]


def memory_per_gpu(arch: Qwen3Arch, layout: Layout, gpu_bytes: float = 80 * GiB) -> MemoryBreakdown:
    """Memory per GPU of `arch` trained at `layout` on GPUs of `gpu_bytes` (module docstring)."""
    params = stage_params_per_gpu(arch, layout)
    weights = 2.0 * params
    gradients = float(layout.grad_bytes) * params
    shards = layout.dp * layout.cp if layout.distributed_optimizer else 1
    optimizer = 12.0 * params / shards

    tokens = layout.micro_batch_tokens
    layers = math.ceil(arch.num_layers / layout.pp)
    per_layer = activation_bytes_per_token_layer(arch, layout)
    if layout.recompute:
        stream = 2.0 * arch.hidden_size / (layout.tp if layout.sequence_parallel else 1) / layout.cp
        one_mb = tokens * (layers * stream + per_layer)
    else:
        one_mb = tokens * layers * per_layer
    in_flight = min(layout.pp, layout.num_microbatches)
    logits = tokens * float(LOGIT_BYTES) * arch.vocab_size / layout.tp / layout.cp
    activations = one_mb * in_flight + logits

    vllm = layout.vllm_memory_fraction * gpu_bytes
    vllm_weights = 2.0 * arch.num_parameters / layout.engine_tp
    overhead = float(layout.overhead_bytes) + layout.resident_bytes
    trainer = weights + gradients + optimizer + activations
    if layout.vllm_sleep:
        train_phase = trainer + overhead
        generate_phase = weights + vllm + overhead
    else:
        train_phase = trainer + vllm + overhead
        generate_phase = train_phase
    return MemoryBreakdown(weights, gradients, optimizer, activations, vllm, vllm_weights, overhead, train_phase,
                           generate_phase)
