"""Megatron's sharded state of the policy: model chunks and the distributed optimizer.

`training_sharded_state` is what `checkpoint.collective` saves and loads through
`dist_checkpointing`; `apply_training_state` puts a loaded state back into the model and the
optimizer, with the two repairs Megatron-Core 0.19.2 needs without Apex/Transformer Engine.
"""

from __future__ import annotations

import torch


def model_sharded_state(model_chunks: list) -> dict:
    """The model part of a sharded state dict (DDP wrappers unwrapped; one key per chunk)."""
    modules = [getattr(chunk, "module", chunk) for chunk in model_chunks]
    if len(modules) == 1:
        return modules[0].sharded_state_dict()
    return {f"model{i}": m.sharded_state_dict() for i, m in enumerate(modules)}


# "fully_reshardable": the distributed optimizer's state is stored per parameter, like a plain
# optimizer's, so a run can resume at another TP/PP/DP layout.
_OPTIMIZER_METADATA = {"distrib_optim_sharding_type": "dp_reshardable"}


def _ensure_optimizer_state(optimizer) -> None:
    """Give a never-stepped optimizer the state tensors a checkpoint will be loaded into.

    Without Apex or Transformer Engine, Megatron's DistributedOptimizer reads one common 'step'
    from torch Adam's per-parameter state to describe itself, and a fresh optimizer has none.
    Zeros of the right shapes (and step 0) are what Adam's own lazy init would create; the
    loaded checkpoint then overwrites all of it. Returns the states given a placeholder 'step',
    which must be removed again before loading (the loader copies every tensor it finds).
    """
    added = []
    for opt in getattr(optimizer, "chained_optimizers", [optimizer]):
        init = getattr(opt, "init_state_fn", None)
        inner = getattr(opt, "optimizer", None)
        if init is None or inner is None:
            continue
        init(inner, getattr(opt, "config", None))
        for group in inner.param_groups:
            for p in group["params"]:
                if "step" not in inner.state[p]:
                    inner.state[p]["step"] = torch.tensor(0.0)
                    added.append(inner.state[p])
    return added


def training_sharded_state(model_chunks: list, optimizer, is_loading: bool = False) -> dict:
    """{"model": ..., "optimizer": ...} for `save_checkpoint` / `load_checkpoint`."""
    model_sd = model_sharded_state(model_chunks)
    out = {"model": model_sd}
    if optimizer is not None:
        added = _ensure_optimizer_state(optimizer) if is_loading else []
        out["optimizer"] = optimizer.sharded_state_dict(model_sd, is_loading=is_loading, metadata=_OPTIMIZER_METADATA)
        for state in added:
            del state["step"]
    return out


def apply_training_state(state: dict, model_chunks: list, optimizer) -> None:
    """Load what `load_checkpoint` returned into the model chunks and the optimizer."""
    modules = [getattr(chunk, "module", chunk) for chunk in model_chunks]
    if len(modules) == 1:
        modules[0].load_state_dict(state["model"], strict=True)
    else:
        for i, m in enumerate(modules):
            m.load_state_dict(state["model"][f"model{i}"], strict=True)
    if optimizer is not None and "optimizer" in state:
        # With float32 parameters the distributed optimizer's main params are views of the
        # model's (grad-requiring) parameters; Megatron copies into them in place.
        with torch.no_grad():
            optimizer.load_state_dict(state["optimizer"])
        _restore_adam_steps(optimizer, state["optimizer"])


def _restore_adam_steps(optimizer, saved: dict) -> None:
    """Put torch Adam's per-parameter 'step' back after a distributed-optimizer load.

    Without Apex/TE, Megatron saves the common step in the param groups but its parameter-state
    loader leaves torch Adam's per-parameter step at the placeholder (seen with megatron-core
    0.19.2): the bias correction of the next update would then be wrong.
    """
    subs = getattr(optimizer, "chained_optimizers", [optimizer])
    # A chain of several optimizers saves one state per member, keyed by position.
    saved_list = [saved] if len(subs) == 1 else [saved.get(i) for i in range(len(subs))]
    for opt, sub_saved in zip(subs, saved_list):
        if not (isinstance(sub_saved, dict) and "param_state" in sub_saved and "optimizer" in sub_saved):
            continue  # not a distributed-optimizer state
        steps = {g.get("step") for g in sub_saved["optimizer"]["param_groups"]} - {None}
        if len(steps) != 1:
            continue
        step = torch.tensor(float(steps.pop()))
        for group in opt.optimizer.param_groups:
            for p in group["params"]:
                if "step" in opt.optimizer.state[p]:
                    opt.optimizer.state[p]["step"] = step.clone()
