"""Data parallelism and the optimizer step on Megatron-Core: DDP, Megatron's optimizer, LR schedule.

Everything parallel here is Megatron's own: `DistributedDataParallel` (contiguous gradient buffers,
bucketed all-reduce or, with the distributed optimizer, reduce-scatter), `get_megatron_optimizer`
(Adam/SGD, optionally sharded over data-parallel ranks, with gradient clipping whose norm is
reduced over the model-parallel group) and `OptimizerParamScheduler` (warm-up and decay of the
learning rate). `train_step` is one optimizer step over the micro-batches of one global batch.

Gradient scale: the reduction contract (`megatron_uniapl.losses.reduction`, stated there once)
is why `finalize_model_grads` is called here with `num_tokens=None`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)

DECAY_STYLES = ("constant", "linear", "cosine", "inverse-square-root")
OPTIMIZERS = ("adam", "sgd")


@dataclass
class OptimizerSettings:
    """The policy's optimizer, learning-rate schedule and gradient handling."""

    optimizer: str = "adam"
    """"adam" (AdamW: decoupled weight decay) or "sgd"."""
    lr: float = 1e-6
    """Peak learning rate (reached after the warm-up)."""
    min_lr: float = 0.0
    """Learning rate at the end of the decay."""
    warmup_steps: int = 0
    """Optimizer steps of linear warm-up from 0 to `lr`; 0 = start at `lr`."""
    decay_steps: int | None = None
    """Steps over which the rate decays to `min_lr` (warm-up included); None = the run's total
    number of steps, given to `build_optimizer`."""
    decay_style: str = "constant"
    """"constant", "linear", "cosine" or "inverse-square-root"."""
    weight_decay: float = 0.0
    """Decoupled weight decay (not applied to biases and norm weights, Megatron's default)."""
    adam_beta1: float = 0.9
    """Adam first-moment coefficient."""
    adam_beta2: float = 0.999
    """Adam second-moment coefficient."""
    adam_eps: float = 1e-8
    """Adam denominator epsilon."""
    sgd_momentum: float = 0.0
    """SGD momentum (sgd only)."""
    clip_grad: float = 1.0
    """Clip the global gradient norm to this value; 0 = no clipping (then no norm is reported)."""
    use_distributed_optimizer: bool = False
    """Shard optimizer state and the fp32 main parameters over data-parallel ranks (ZeRO-1)."""
    grad_reduce_in_fp32: bool = True
    """Accumulate and reduce gradients in float32 even for bf16 models."""
    bucket_size: int | None = None
    """DDP bucket size in elements; None = Megatron's default."""

    def validate(self, where: str = "optimizer") -> OptimizerSettings:
        """Raise ValueError naming the offending field; return self."""
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"{where}.optimizer is {self.optimizer!r}; choose one of {OPTIMIZERS}")
        if self.decay_style not in DECAY_STYLES:
            raise ValueError(f"{where}.decay_style is {self.decay_style!r}; choose one of {DECAY_STYLES}")
        if self.lr <= 0:
            raise ValueError(f"{where}.lr must be > 0, got {self.lr}")
        if not 0 <= self.min_lr <= self.lr:
            raise ValueError(f"{where}.min_lr must be in [0, lr={self.lr}], got {self.min_lr}")
        for name in ("warmup_steps", "weight_decay", "clip_grad", "adam_eps", "sgd_momentum"):
            if getattr(self, name) < 0:
                raise ValueError(f"{where}.{name} must be >= 0, got {getattr(self, name)}")
        for name in ("adam_beta1", "adam_beta2"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{where}.{name} must be in [0, 1), got {getattr(self, name)}")
        if self.decay_steps is not None and self.decay_steps <= self.warmup_steps:
            raise ValueError(
                f"{where}.decay_steps ({self.decay_steps}) must exceed warmup_steps ({self.warmup_steps})"
            )
        return self


def wrap_ddp(model_chunks: list[torch.nn.Module], settings: OptimizerSettings) -> list[torch.nn.Module]:
    """Wrap each model chunk in Megatron's `DistributedDataParallel` (gradient buffers in place).

    Only the first chunk buckets its gradients (Megatron's convention for interleaved pipelines:
    later chunks' buffers are reduced as one). Overlap of communication with the backward pass is
    off: it needs CUDA streams, and the step below finishes the reduction explicitly.
    """
    from megatron.core.distributed import (
        DistributedDataParallel,
        DistributedDataParallelConfig,
    )
    ddp_config = DistributedDataParallelConfig(
        grad_reduce_in_fp32=settings.grad_reduce_in_fp32,
        overlap_grad_reduce=False,
        use_distributed_optimizer=settings.use_distributed_optimizer,
        bucket_size=settings.bucket_size,
        average_in_collective=False,  # required with calculate_per_token_loss (we sum over ranks)
    )
    return [
        DistributedDataParallel(
            config=chunk.config, ddp_config=ddp_config, module=chunk, disable_bucketing=i > 0
        )
        for i, chunk in enumerate(model_chunks)
    ]


def build_optimizer(model_chunks: list[torch.nn.Module], settings: OptimizerSettings, total_steps: int):
    """Megatron's optimizer over DDP-wrapped `model_chunks` and its learning-rate scheduler.

    total_steps: planned optimizer steps of the run (the decay length when `decay_steps` is None).
    Returns (optimizer, scheduler); call `scheduler.step(1)` after each successful step
    (`train_step` does).
    """
    from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer

    settings.validate()
    model_config = model_chunks[0].config
    config = OptimizerConfig(
        optimizer=settings.optimizer,
        lr=settings.lr,
        min_lr=settings.min_lr,
        weight_decay=settings.weight_decay,
        adam_beta1=settings.adam_beta1,
        adam_beta2=settings.adam_beta2,
        adam_eps=settings.adam_eps,
        sgd_momentum=settings.sgd_momentum,
        clip_grad=settings.clip_grad,
        use_distributed_optimizer=settings.use_distributed_optimizer,
        bf16=model_config.bf16,
        fp16=model_config.fp16,
        params_dtype=model_config.params_dtype,
    )
    optimizer = get_megatron_optimizer(config, model_chunks)
    decay_steps = settings.decay_steps or max(total_steps, settings.warmup_steps + 1)
    scheduler = lr_scheduler(optimizer, settings.lr, settings.min_lr, settings.warmup_steps, decay_steps,
                             settings.decay_style, settings.weight_decay)
    return optimizer, scheduler


def lr_scheduler(optimizer, lr: float, min_lr: float, warmup_steps: int, decay_steps: int, decay_style: str,
                 weight_decay: float, scheduler_class=None):
    """Megatron's scheduler: linear warm-up from 0 to `lr` over `warmup_steps` (none: `lr` from the
    start), then `decay_style` down to `min_lr` at `decay_steps`; constant weight decay. It sets
    the learning rate of `optimizer`'s parameter groups as it is built. `scheduler_class`: a
    subclass of Megatron's `OptimizerParamScheduler` to build instead."""
    from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler

    return (scheduler_class or OptimizerParamScheduler)(
        optimizer,
        init_lr=0.0 if warmup_steps else lr,
        max_lr=lr,
        min_lr=min_lr,
        lr_warmup_steps=warmup_steps,
        lr_decay_steps=decay_steps,
        lr_decay_style=decay_style,
        start_wd=weight_decay,
        end_wd=weight_decay,
        wd_incr_steps=decay_steps,
        wd_incr_style="constant",
    )


@dataclass
class StepResult:
    """What one optimizer step reports."""

    skipped: bool
    """True when the update was not applied (non-finite gradients, or fp16 overflow)."""
    grad_norm: float | None
    """Global gradient norm before clipping (None when clipping is off or the step was skipped)."""
    learning_rate: float
    """Learning rate used by this step."""
    metrics: dict[str, float] = field(default_factory=dict)
    """Loss metrics summed over micro-batches and data-parallel ranks (last pipeline stage only;
    empty on other stages)."""


def _grads_finite(model_chunks: list[torch.nn.Module]) -> bool:
    """Whether every gradient on every rank is finite (all-reduced over the world)."""
    bad = torch.zeros((), dtype=torch.float32)
    for chunk in model_chunks:
        for buffer in chunk.buffers + chunk.expert_parallel_buffers:
            if not torch.isfinite(buffer.grad_data).all():
                bad.fill_(1.0)
    if torch.cuda.is_available():
        bad = bad.cuda()
    if dist.is_initialized():
        dist.all_reduce(bad, op=dist.ReduceOp.MAX)
    return bad.item() == 0.0


def _reduce_metrics(metrics: dict[str, torch.Tensor]) -> dict[str, float]:
    from megatron.core import parallel_state

    if not metrics:
        return {}
    keys = sorted(metrics)
    flat = torch.stack([metrics[k].float().reshape(()) for k in keys])
    if torch.cuda.is_available():
        flat = flat.cuda()
    group = parallel_state.get_data_parallel_group(with_context_parallel=True)
    if dist.get_world_size(group) > 1:
        dist.all_reduce(flat, group=group)
    return dict(zip(keys, flat.tolist()))


def train_step(model_chunks, optimizer, micro_batches: list[dict], loss_fn, scheduler=None) -> StepResult:
    """One optimizer step: zero grads, forward/backward all micro-batches, reduce, check, update.

    model_chunks: DDP-wrapped chunks (`wrap_ddp`); optimizer (and scheduler) from `build_optimizer`.
    micro_batches: this data-parallel rank's micro-batches; every rank must hold the same count.
    loss_fn: a `run_microbatches` loss function normalized by global counts (`algorithm.loss.UniAPLLoss`).
    Gradients that are not finite on any rank skip the update on all ranks (the model is left
    unchanged and the scheduler does not advance). After the step the gradient buffers hold the
    reduced gradients, clipped in place when `clip_grad > 0`. Collective over the whole world.
    """
    from megatron.core.distributed import finalize_model_grads

    from megatron_uniapl.model.pipeline import run_microbatches

    for chunk in model_chunks:
        chunk.zero_grad_buffer()
    optimizer.zero_grad()
    per_micro = run_microbatches(model_chunks, micro_batches, loss_fn=loss_fn)
    # num_tokens=None: the loss is already normalized by global token counts (module docstring).
    finalize_model_grads(model_chunks, num_tokens=None)
    learning_rate = float(optimizer.param_groups[0]["lr"])
    grad_norm = None
    if _grads_finite(model_chunks):
        success, norm, _ = optimizer.step()
        skipped = not success
        if success and optimizer.config.clip_grad > 0 and norm is not None:
            grad_norm = float(norm)
        if success and scheduler is not None:
            scheduler.step(1)
    else:
        skipped = True
        logger.warning("non-finite gradients: optimizer step skipped on every rank")
    if grad_norm is not None and not math.isfinite(grad_norm):
        skipped = True
    return StepResult(skipped, grad_norm, learning_rate, _reduce_metrics(sum_metrics(per_micro)))


def sum_metrics(per_micro_batch: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Sum the metric dicts of this rank's micro-batches (they are shares of global token means)."""
    total: dict[str, torch.Tensor] = {}
    for metrics in per_micro_batch:
        for k, v in metrics.items():
            total[k] = total[k] + v.detach().float() if k in total else v.detach().float().clone()
    return total
