"""Per-rank scenarios of test_megatron_glue_parallel.py: the UniAPL step through the Megatron glue.

`train` builds the tiny policy (and a differently seeded reference policy) at a parallel layout,
packs the global batch of `glue_utils.mixed_samples` for this layout's data-parallel size,
recomputes old and reference log-probs through the pipeline, runs one `train_step` through DDP
and Megatron's optimizer, and saves what this rank holds: HF-named gradients (after
`finalize_model_grads` and Megatron's in-place clipping to norm 1, the same factor in every layout since
the norm itself is compared), HF-named updated weights, the step's metrics and gradient norm.
`vocab` checks the vocabulary-parallel log-probs and entropy against the full-vocabulary values.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed as dist


def old_logprob_offset(targets: torch.Tensor) -> torch.Tensor:
    """A fixed per-token shift of pi_old so importance ratios move (and clip) in both directions.

    It depends on the target token id only, never on where packing put the token, so every layout
    sees the same pi_old for the same sample token.
    """
    return 0.15 * ((targets % 5).float() - 2.0)


def _build(hf_dir, tp, pp, sp=False):
    from megatron.core import parallel_state as ps

    from megatron_uniapl.config.model import ModelOptions
    from megatron_uniapl.convert.hf_io import HFCheckpointReader
    from megatron_uniapl.convert.megatron_params import load_hf_into_model
    from megatron_uniapl.model.builder import build_qwen3_model
    from megatron_uniapl.model.hf_config import load_qwen3_arch

    arch = load_qwen3_arch(hf_dir)
    model = build_qwen3_model(
        arch, ModelOptions(tensor_parallel=tp, pipeline_parallel=pp, sequence_parallel=sp, dtype="float32",
                           spec="portable")
    )
    with HFCheckpointReader(hf_dir) as reader:
        load_hf_into_model(model, reader, arch, ps.get_tensor_model_parallel_rank(), tp)
    return arch, model


def run_train(
    name, hf_dir, ref_dir, out_dir, tp=1, pp=1, budget=4096, optimizer="sgd", distributed=False, lr=0.5, sp=False
):
    from glue_utils import all_terms_objective, prepared_samples
    from megatron.core import parallel_state as ps
    from parity_utils import hf_named_grads

    from megatron_uniapl import parallel
    from megatron_uniapl.algorithm.loss import UniAPLLoss, attach_logprobs, rank_batches
    from megatron_uniapl.convert.megatron_params import iter_hf_tensors
    from megatron_uniapl.data.packing import pack_samples
    from megatron_uniapl.model.distributed import (
        OptimizerSettings,
        build_optimizer,
        train_step,
        wrap_ddp,
    )

    parallel.initialize(tp, pp)
    arch, policy = _build(hf_dir, tp, pp, sp)
    _, reference = _build(ref_dir, tp, pp, sp)
    settings = OptimizerSettings(
        optimizer=optimizer, lr=lr, clip_grad=1.0, adam_eps=1e-4, use_distributed_optimizer=distributed
    )
    chunks = wrap_ddp([policy], settings)
    opt, scheduler = build_optimizer(chunks, settings, total_steps=10)

    objective = all_terms_objective()
    dp_size, dp_rank = ps.get_data_parallel_world_size(), ps.get_data_parallel_rank()
    # The layout's token multiple (TP with sequence parallelism): padded micro-batches.
    packed = pack_samples(prepared_samples(objective), budget, dp_size, pad_to_multiple_of=policy.config.tensor_model_parallel_size if sp else 1)
    batches = rank_batches(packed, dp_rank)
    attach_logprobs(chunks, batches, "old_logprobs")
    attach_logprobs([reference], batches, "ref_logprobs")
    for b in batches:
        if b["old_logprobs"] is not None:
            b["old_logprobs"] = b["old_logprobs"] + old_logprob_offset(b["targets"])
    loss_fn = UniAPLLoss(objective.weights_at(0), objective.pg, packed.term_counts())
    result = train_step(chunks, opt, batches, loss_fn, scheduler)

    # The sync verification's forward on odd lengths (padded to the layout's multiple inside).
    from megatron_uniapl.rollout.megatron_verify import check_sequences, megatron_logprobs

    seqs, plens = check_sequences(arch.vocab_size, lengths=(23, 41), seed=3)
    tp_group = ps.get_tensor_model_parallel_group()
    out = {
        "verify_logprobs": megatron_logprobs([chunks[0].module], seqs, plens),
        "metrics": result.metrics,
        "grad_norm": result.grad_norm,
        "skipped": result.skipped,
        "num_micro_batches": len(batches),
        "padding": sum(int(mb.input_ids.shape[1]) - mb.num_real_tokens for mb in packed.micro_batches[dp_rank]),
        "tp_rank": ps.get_tensor_model_parallel_rank(),
        "pp_rank": ps.get_pipeline_model_parallel_rank(),
        "dp_rank": dp_rank,
        "grads": {} if distributed else hf_named_grads(chunks[0].module, arch, tp_group),
        "weights": {k: v.clone() for k, v in iter_hf_tensors(chunks[0].module, arch, tp_group)},
    }
    rank = dist.get_rank() if dist.is_initialized() else 0
    torch.save(out, Path(out_dir) / f"{name}_rank{rank}.pt")


def run_vocab(name, out_dir, tp=2):
    """TP-sharded log-probs/entropy and their gradients vs the full-vocabulary functions."""
    from megatron.core import parallel_state as ps

    from megatron_uniapl import parallel
    from megatron_uniapl.losses.logprobs import (
        entropy_from_logits,
        logprobs_from_logits,
    )
    from megatron_uniapl.losses.vocab_parallel import (
        vocab_parallel_entropy,
        vocab_parallel_logprobs,
    )

    parallel.initialize(tp, 1)
    rank = ps.get_tensor_model_parallel_rank()
    g = torch.Generator().manual_seed(0)
    vocab = 96
    full = (3.0 * torch.randn(2, 5, vocab, generator=g)).requires_grad_(True)
    targets = torch.randint(0, vocab, (2, 5), generator=g)
    targets[0, :4] = torch.tensor([0, vocab // tp - 1, vocab // tp, vocab - 1])  # slice edges
    c_lp, c_ent = torch.randn(2, 5, generator=g), torch.randn(2, 5, generator=g)

    # The reference runs in float64 (the functions compute in float32 whatever comes in).
    full64 = full.detach().double().requires_grad_(True)
    ref_lp = torch.log_softmax(full64, -1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    ref_ent = -(torch.softmax(full64, -1) * torch.log_softmax(full64, -1)).sum(-1)
    (ref_grad,) = torch.autograd.grad((c_lp * ref_lp + c_ent * ref_ent).sum(), full64)
    # and the TP=1 functions on the full vocabulary, for the "same as TP=1" claim
    tp1_lp, tp1_ent = logprobs_from_logits(full, targets), entropy_from_logits(full)

    width = vocab // tp
    shard = full.detach()[..., rank * width : (rank + 1) * width].clone().requires_grad_(True)
    lp, ent = vocab_parallel_logprobs(shard, targets), vocab_parallel_entropy(shard)
    (grad,) = torch.autograd.grad((c_lp * lp + c_ent * ent).sum(), shard)
    out = {
        "lp_diff": (lp - ref_lp).abs().max().item(),
        "ent_diff": (ent - ref_ent).abs().max().item(),
        "grad_diff": (grad - ref_grad[..., rank * width : (rank + 1) * width]).abs().max().item(),
        "grad_scale": ref_grad.abs().max().item(),
        "tp1_lp_diff": (lp - tp1_lp).abs().max().item(),
        "tp1_ent_diff": (ent - tp1_ent).abs().max().item(),
    }
    out.update(_tempered_vocab(full, shard.detach(), targets, c_lp, c_ent, rank, width))
    torch.save(out, Path(out_dir) / f"{name}_rank{dist.get_rank()}.pt")


def _tempered_vocab(full, shard, targets, c_lp, c_ent, rank, width):
    """The same at a per-position temperature (0.7, 1.3 and 1 mixed, as rollout and demo tokens
    are in one packed batch) against float64 log_softmax(z / T)."""
    from megatron_uniapl.losses.vocab_parallel import (
        vocab_parallel_entropy,
        vocab_parallel_logprobs,
    )

    temperature = torch.ones(targets.shape)
    temperature[0, 1:] = 0.7
    temperature[1, :3] = 1.3
    full64 = full.detach().double().requires_grad_(True)
    ref_all = torch.log_softmax(full64 / temperature.double().unsqueeze(-1), -1)
    ref_lp = ref_all.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    ref_ent = -(ref_all.exp() * ref_all).sum(-1)
    (ref_grad,) = torch.autograd.grad((c_lp * ref_lp + c_ent * ref_ent).sum(), full64)
    shard = shard.clone().requires_grad_(True)
    lp = vocab_parallel_logprobs(shard, targets, temperature=temperature)
    ent = vocab_parallel_entropy(shard, temperature=temperature)
    (grad,) = torch.autograd.grad((c_lp * lp + c_ent * ent).sum(), shard)
    return {
        "t_lp_diff": (lp - ref_lp).abs().max().item(),
        "t_ent_diff": (ent - ref_ent).abs().max().item(),
        "t_grad_diff": (grad - ref_grad[..., rank * width : (rank + 1) * width]).abs().max().item(),
        "t_grad_scale": ref_grad.abs().max().item(),
    }


def run_disc(name, hf_dir, out_dir):
    """The Megatron-backbone discriminator at TP=2 and at TP=1 on the same inputs: scores, one
    clipped AdamW update (TP-aware norm; at TP=1 the two ranks are data-parallel), scores again."""
    from megatron_uniapl import parallel
    from megatron_uniapl.config.discriminator import CoTrainedDiscriminatorConfig
    from megatron_uniapl.config.model import ModelOptions
    from megatron_uniapl.discriminator.cotrained import CoTrainedDiscriminator
    from megatron_uniapl.discriminator.megatron_backbone import (
        build_megatron_discriminator,
    )
    from megatron_uniapl.model.hf_config import load_qwen3_arch

    g = torch.Generator().manual_seed(0)

    def batch(n, width):
        ids = torch.randint(0, 3000, (n, width), generator=g)
        mask = (torch.arange(width) < torch.randint(2, width + 1, (n, 1), generator=g)).long()
        return ids * mask, mask

    expert, policy, probe = batch(4, 12), batch(4, 10), batch(5, 9)
    arch = load_qwen3_arch(hf_dir)
    out = {}
    for tp in (2, 1):
        parallel.initialize(tp, 1)
        scorer = build_megatron_discriminator(
            arch, ModelOptions(tensor_parallel=tp, dtype="float32", spec="portable"), hf_dir
        )
        disc = CoTrainedDiscriminator(scorer, CoTrainedDiscriminatorConfig(lr=1e-2, grad_clip=0.05))
        before = disc.score_ids(*probe)
        metrics = disc.update(*expert, *policy)
        out[tp] = {"before": before, "after": disc.score_ids(*probe), "metrics": metrics}
    torch.save(out, Path(out_dir) / f"{name}_rank{dist.get_rank()}.pt")


def run_all(scenarios: list[dict]) -> None:
    """Entry point of a spawned rank: every scenario in turn in one world (see dist_worker.py)."""
    from megatron_uniapl import parallel

    for scenario in scenarios:
        scenario = dict(scenario)
        kind = scenario.pop("kind")
        {"train": run_train, "vocab": run_vocab, "disc": run_disc}[kind](**scenario)
    parallel.destroy()
