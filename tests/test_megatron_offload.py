"""The trainer state parked during rollouts, found on Megatron's own objects: DDP's contiguous
grad buffers and the DistributedOptimizer's Adam state. On the CPU the moves run with
`skip_on_offload_device=False`, so the storage mechanics are exercised for real."""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.slow


def _storage(t):
    return t.untyped_storage().data_ptr()


def _step(ddp, optimizer, ids):
    from parity_utils import lm_loss_fn

    from megatron_uniapl.model.pipeline import run_microbatches

    ddp.zero_grad_buffer()
    optimizer.zero_grad()
    micro = [{"input_ids": ids, "position_ids": torch.arange(ids.shape[1])[None], "labels": ids}]
    run_microbatches([ddp], micro, loss_fn=lm_loss_fn(ids.shape[1] - 1))
    ddp.finish_grad_sync()
    optimizer.step()


def test_megatron_grad_buffers_and_optimizer_state_offload_and_return(tiny_tied, megatron_world):
    from megatron.core.distributed import (
        DistributedDataParallel,
        DistributedDataParallelConfig,
    )
    from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer
    from parity_utils import megatron_from_hf

    from megatron_uniapl.colocation.megatron_state import (
        grad_buffer_tensors,
        megatron_train_state,
        megatron_train_state_tensors,
        optimizer_tensors,
    )

    arch, model = megatron_from_hf(tiny_tied)
    ddp = DistributedDataParallel(
        model.config, DistributedDataParallelConfig(use_distributed_optimizer=True, grad_reduce_in_fp32=True), model
    )
    optimizer = get_megatron_optimizer(
        OptimizerConfig(optimizer="adam", lr=1e-3, use_distributed_optimizer=True, bf16=False), [ddp]
    )
    ids = torch.randint(0, 151_000, (1, 20), generator=torch.Generator().manual_seed(0))
    _step(ddp, optimizer, ids)

    grads = grad_buffer_tensors([ddp])
    assert len(grads) == len(ddp.buffers) >= 1
    main_grad = next(p for p in model.parameters()).main_grad
    assert _storage(main_grad) in {_storage(g) for g in grads}  # main_grad views live in the buffer
    state = optimizer_tensors(optimizer)
    moments = [t for t in state if t.numel() > 1]
    assert len(moments) == 2 * sum(len(g["params"]) for g in optimizer.optimizer.param_groups)
    params = {_storage(p) for p in model.parameters()}
    collected = megatron_train_state_tensors([ddp], optimizer)
    assert not params & {_storage(t) for t in collected}

    # The sync streams from the DDP-wrapped chunks the trainer holds, as from the bare model.
    from megatron_uniapl.rollout.megatron_sync import (
        iter_model_buckets,
        megatron_hf_shapes,
    )

    wrapped = [(n, t) for b in iter_model_buckets([ddp], arch, 1 << 20) for n, t in b]
    bare = [(n, t) for b in iter_model_buckets([model], arch, 1 << 20) for n, t in b]
    assert [n for n, _ in wrapped] == [n for n, _ in bare] and len(wrapped) == 24
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(wrapped, bare))
    assert megatron_hf_shapes([ddp], arch)["model.embed_tokens.weight"] == (151936, 64)

    snapshot = [t.clone() for t in collected]
    logits = model(ids, torch.arange(20)[None], None).detach()
    offloader = megatron_train_state([ddp], optimizer, skip_on_offload_device=False)
    stats = offloader.offload()
    assert stats.num_bytes >= sum(t.numel() * t.element_size() for t in moments + grads)
    assert all(t.untyped_storage().nbytes() == 0 for t in moments + grads)
    # The model stays usable while parked: this is when the engine is synced from it.
    assert torch.equal(model(ids, torch.arange(20)[None], None).detach(), logits)
    offloader.onload()
    assert all(torch.equal(t, s) for t, s in zip(collected, snapshot))
    _step(ddp, optimizer, ids)  # training continues from the restored state
    assert not torch.equal(model(ids, torch.arange(20)[None], None).detach(), logits)


def test_tensors_aliasing_parameters_are_never_parked():
    from megatron_uniapl.colocation.megatron_state import megatron_train_state_tensors

    model = torch.nn.Linear(4, 4)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    own = torch.zeros(3)
    optimizer.state[model.weight] = {"alias": model.weight.data.view(-1), "own": own}
    model.weight.grad = torch.ones(4, 4)
    kept = megatron_train_state_tensors([model], optimizer)
    assert [_storage(t) for t in kept] == [_storage(model.weight.grad), _storage(own)]
