"""The scaling arithmetic, checked by hand: memory per GPU and the step-time model."""

from __future__ import annotations

from pathlib import Path

import pytest

from megatron_uniapl.planning.memory import (
    GiB,
    Layout,
    memory_per_gpu,
    per_layer_params,
    stage_params_per_gpu,
)
from megatron_uniapl.planning.plan import shipped_arch
from megatron_uniapl.planning.step_time import Hardware, StepWork, step_time

ROOT = Path(__file__).resolve().parents[1]

# Published non-embedding parameter counts of Qwen3 (model cards), in billions.
PUBLISHED_NON_EMBEDDING = {"0p6b": 0.44, "1p7b": 1.4, "4b": 3.6, "8b": 6.95, "14b": 13.2, "32b": 31.2}


@pytest.mark.parametrize("size", sorted(PUBLISHED_NON_EMBEDDING))
def test_shipped_architectures_match_published_sizes(size):
    arch = shipped_arch(size)
    embedding = arch.vocab_size * arch.hidden_size * (1 if arch.tie_word_embeddings else 2)
    non_embedding = (arch.num_parameters - embedding) / 1e9
    assert non_embedding == pytest.approx(PUBLISHED_NON_EMBEDDING[size], rel=0.02)
    # One stage on one GPU holds the whole model: the layout arithmetic agrees with Qwen3Arch.
    assert stage_params_per_gpu(arch, Layout()) == arch.num_parameters


def test_memory_by_hand_qwen3_0p6b():
    arch = shipped_arch("0p6b")  # h 1024, q 16*128, kv 8*128, f 3072, 28 layers, V 151936, tied
    layer = 1024 * 2048 + 2 * 1024 * 1024 + 2048 * 1024 + 3 * 1024 * 3072 + 2 * 1024 + 2 * 128
    assert per_layer_params(arch) == layer == 15_730_944
    params = 28 * layer + 151_936 * 1024 + 1024
    layout = Layout(tp=1, pp=1, dp=8, micro_batch_tokens=8192, vllm_memory_fraction=0.4, vllm_sleep=True)
    mem = memory_per_gpu(arch, layout, gpu_bytes=80 * GiB)
    assert mem.weights == 2 * params == 1_192_099_840
    assert mem.gradients == 4 * params
    assert mem.optimizer == 12 * params / 8
    per_token_layer = 2 * (4 * 1024 + 3 * 2048 + 3 * 1024 + 3 * 3072)  # 45_056 bytes
    # the last stage's logits: bf16 (2 bytes) + the loss's float32 temporaries (18) per element
    assert mem.activations == 8192 * 28 * per_token_layer + 8192 * 20 * 151_936 == 35_227_959_296
    assert mem.vllm_weights == 2 * params  # engine TP 1: the whole model, out of the engine's share
    assert mem.vllm == 0.4 * 80 * GiB
    assert mem.train_phase == 2 * params + 4 * params + 1.5 * params + 35_227_959_296 + 3 * GiB
    assert mem.generate_phase == 2 * params + 0.4 * 80 * GiB + 3 * GiB
    assert mem.peak == mem.train_phase  # 40.0 GiB: the logits of 8192-token micro-batches dominate at 0.6B
    # Without sleep mode the engine's share stacks on top of training.
    awake = memory_per_gpu(arch, Layout(dp=8, vllm_memory_fraction=0.4, vllm_sleep=False))
    assert awake.peak == mem.train_phase + 0.4 * 80 * GiB
    # Without the distributed optimizer the 12 bytes/param are not sharded.
    assert memory_per_gpu(arch, Layout(dp=8, distributed_optimizer=False)).optimizer == 12 * params


def test_memory_by_hand_qwen3_32b_pipeline_recompute():
    arch = shipped_arch("32b")  # h 5120, q 64*128, kv 8*128, f 25600, 64 layers, untied
    layer = 5120 * 8192 + 2 * 5120 * 1024 + 8192 * 5120 + 3 * 5120 * 25600 + 2 * 5120 + 256
    layout = Layout(tp=8, pp=2, dp=2, micro_batch_tokens=4096, num_microbatches=4, sequence_parallel=True,
                    recompute=True)
    assert stage_params_per_gpu(arch, layout) == (32 * layer + 151_936 * 5120 + 5120) / 8
    full_layer = 2 * (4 * 5120 / 8 + (3 * 8192 + 3 * 1024 + 3 * 25600) / 8)  # 31_232 bytes
    stored_input = 2 * 5120 / 8                                               # 1_280 bytes
    in_flight = 2                                                             # min(pp, micro-batches)
    expected = 4096 * (32 * stored_input + full_layer) * in_flight + 4096 * 20 * 151_936 / 8
    mem = memory_per_gpu(arch, layout)
    assert mem.activations == expected == 2_147_221_504
    no_recompute = memory_per_gpu(arch, Layout(tp=8, pp=2, dp=2, micro_batch_tokens=4096, num_microbatches=4,
                                               sequence_parallel=True))
    assert no_recompute.activations == 4096 * 32 * full_layer * 2 + 4096 * 20 * 151_936 / 8
    engines = memory_per_gpu(arch, Layout(tp=8, dp=4, engine_tp=4))
    assert engines.vllm_weights == 2 * arch.num_parameters / 4  # 16.4 GB of a 32B model per GPU


def test_loss_temporaries_per_logit_are_what_the_plan_counts():
    """Live tensor bytes while the UniAPL loss runs forward and backward on bf16 logits, tracked
    allocation by allocation: their peak per logit element is the plan's LOSS_TEMPORARY_BYTES."""
    import weakref

    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_map

    from megatron_uniapl.algorithm.loss import UniAPLLoss
    from megatron_uniapl.config.variants import objective_for_variant
    from megatron_uniapl.planning.memory import LOSS_TEMPORARY_BYTES

    class LiveBytes(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.live = self.peak = 0
            self.storages = set()

        def track(self, t):
            if not isinstance(t, torch.Tensor) or t.untyped_storage().nbytes() == 0:
                return
            storage = t.untyped_storage()
            key = storage.data_ptr()
            if key in self.storages:
                return
            self.storages.add(key)
            self.live += storage.nbytes()
            self.peak = max(self.peak, self.live)
            weakref.finalize(storage, self.free, key, storage.nbytes())

        def free(self, key, nbytes):
            self.live -= nbytes
            self.storages.discard(key)

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            tree_map(self.track, out)
            return out

    tokens, vocab = 256, 4096
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(1, tokens, vocab, generator=g).bfloat16().requires_grad_(True)
    mask = torch.ones(1, tokens)
    batch = {"targets": torch.randint(0, vocab, (1, tokens), generator=g), "sft_mask": mask * 0.5,
             "rollout_mask": mask * 0.5, "advantages": {"task": torch.randn(1, tokens, generator=g)},
             "old_logprobs": torch.full((1, tokens), -8.0), "rollout_logprobs": torch.full((1, tokens), -8.0)}
    objective = objective_for_variant("grpo")
    loss_fn = UniAPLLoss(objective.weights_at(0), objective.pg, {"sft": tokens, "pg_task": tokens})
    with LiveBytes() as live:
        loss, _, _ = loss_fn(logits, batch)
        loss.backward()
    per_element = live.peak / (tokens * vocab)  # the per-token tensors add ~0.007 at this vocabulary
    assert LOSS_TEMPORARY_BYTES - 0.5 < per_element <= LOSS_TEMPORARY_BYTES + 0.05, per_element


def test_step_time_by_hand():
    work = StepWork(params=1e9, world=8, vllm_tp=1, sequences=512, max_tokens=1000, train_tokens=1_000_000,
                    rollout_tokens=800_000)
    t = step_time(work, Hardware(peak_flops=989e12, mfu=0.35, hbm_bw=3.35e12, hbm_eff=0.6, nvlink_bw=450e9))
    decode = 1000 * 2e9 / (3.35e12 * 0.6)                       # memory-bound: 0.995 s
    compute = (512 / 8) * 1000 * 2e9 / (989e12 * 0.35)          # 0.370 s
    assert t.generate == pytest.approx(max(decode, compute)) and t.generate == pytest.approx(0.99502, rel=1e-4)
    assert t.train == pytest.approx((1e6 * 6e9 + 8e5 * 2e9) / (8 * 989e12 * 0.35))  # 2.7445 s
    assert t.sync == pytest.approx(2e9 / 450e9)
    assert t.total == pytest.approx(t.generate + t.train + t.sync)
    kl = step_time(StepWork(1e9, 8, 1, 512, 1000, 1_000_000, 800_000, recompute=True, kl=True))
    assert kl.train == pytest.approx((1e6 * 8e9 + 8e5 * 4e9) / (8 * 989e12 * 0.35))
    sft_only = step_time(StepWork(1e9, 8, 1, 0, 0, 1_000_000, 0))
    assert sft_only.generate == 0 and sft_only.sync == 0


def test_recipe_step_work(monkeypatch):
    from megatron_uniapl.config import load_config
    from megatron_uniapl.planning.plan import (
        predicted_step_time,
        step_work_for,
        tokens_per_step,
    )

    for name in ("UNIAPL_MODELS", "UNIAPL_DATA", "UNIAPL_RUNS"):
        monkeypatch.setenv(name, "/x")
    config = load_config(ROOT / "recipes" / "qwen3_4b.yaml")
    # 64 prompts x 8 samples x (1024 + 2048) tokens + 64 demos x (1024 + 2048) tokens.
    assert tokens_per_step(config) == 64 * 8 * 3072 + 64 * 3072 == 1_769_472
    work = step_work_for(config)
    assert (work.world, work.vllm_tp, work.sequences, work.max_tokens) == (8, 1, 512, 2048)
    assert work.rollout_tokens == 512 * 3072 and work.params == shipped_arch("4b").num_parameters
    assert predicted_step_time(config) == step_time(work)
    sft = load_config(ROOT / "recipes" / "variants" / "qwen3_4b_sft.yaml")
    assert tokens_per_step(sft) == 64 * 3072 and step_work_for(sft).sequences == 0
