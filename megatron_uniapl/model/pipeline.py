"""Run micro-batches through Megatron's forward/backward schedule (pipeline parallel included).

The trainer, `tools/convert_hf.py verify` and the tests all go through `run_microbatches`, so the
pipeline schedule in use is Megatron's own (`get_forward_backward_func`): no parallel logic is
re-implemented here. A micro-batch is a dict with `input_ids` [b, s], `position_ids` [b, s] and,
for packed rows, `packed_lengths` (sample lengths in the row, b == 1).

Loss convention: a loss function returns `(loss, num_tokens, metrics)` with `loss` already
normalized as the reduction contract says (`megatron_uniapl.losses.reduction`); Megatron adds
nothing to that scale.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from megatron_uniapl.model.packing import packed_seq_params

LossFn = Callable[[torch.Tensor, dict], tuple[torch.Tensor, torch.Tensor, dict]]
"""(vocab-parallel logits [b, s, V/tp], micro-batch) -> (loss, num_tokens, metrics)."""


def _model_forward(model: torch.nn.Module, batch: dict) -> torch.Tensor:
    packed = None
    if batch.get("packed_lengths") is not None:
        packed = packed_seq_params(batch["packed_lengths"], device=batch["input_ids"].device)
    return model(batch["input_ids"], batch["position_ids"], None, packed_seq_params=packed)


def run_microbatches(
    model_chunks: list[torch.nn.Module],
    micro_batches: list[dict],
    loss_fn: LossFn | None = None,
    forward_only: bool = False,
) -> list:
    """Forward (and backward unless `forward_only`) every micro-batch through the pipeline.

    With `loss_fn`, returns the metrics dicts of the micro-batches on the last pipeline stage.
    Without it (forward only), returns the full-vocabulary logits [b, s, V] of each micro-batch
    on the last stage (gathered over tensor parallelism). Other stages get an empty list.
    """
    from megatron.core import tensor_parallel
    from megatron.core.pipeline_parallel import get_forward_backward_func

    if loss_fn is None and not forward_only:
        raise ValueError("a backward pass needs a loss_fn")
    seq_length = max(b["input_ids"].shape[1] for b in micro_batches)
    config = model_chunks[0].config
    if not config.variable_seq_lengths and any(b["input_ids"].shape[1] != seq_length for b in micro_batches):
        raise ValueError(
            "this model exchanges fixed activation shapes between pipeline stages (interleaved "
            "pipeline): every micro-batch must have the same sequence length"
        )
    micro_batch_size = micro_batches[0]["input_ids"].shape[0]

    def forward_step(data_iterator, model):
        batch = next(data_iterator)
        output = _model_forward(model, batch)

        def finish(output_tensor, non_loss_data: bool = False):
            if loss_fn is None:
                return tensor_parallel.gather_from_tensor_model_parallel_region(output_tensor).detach()
            return loss_fn(output_tensor, batch)

        return output, finish

    forward_backward = get_forward_backward_func()
    return forward_backward(
        forward_step_func=forward_step,
        # Each interleaved chunk reads the micro-batches through its own iterator.
        data_iterator=iter(micro_batches) if len(model_chunks) == 1 else [iter(micro_batches) for _ in model_chunks],
        model=model_chunks if len(model_chunks) > 1 else model_chunks[0],
        num_microbatches=len(micro_batches),
        seq_length=seq_length,
        micro_batch_size=micro_batch_size,
        forward_only=forward_only,
        collect_non_loss_data=loss_fn is None,
    )
