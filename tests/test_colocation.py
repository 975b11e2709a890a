"""The co-location state machine and the storage-level offload of trainer state (no vLLM).

The engine here is a recording test double: what is checked is the scheduler's ordering and
version rules; the real engine's side of the same calls is covered in tests/test_vllm_engine.py.
Offload runs its full mechanism on CPU (`skip_on_offload_device=False`), so storages really are
emptied and refilled.
"""

from __future__ import annotations

import copy

import pytest
import torch

from megatron_uniapl.colocation.offload import (
    TensorOffloader,
    grad_tensors,
    optimizer_state_tensors,
)
from megatron_uniapl.colocation.phases import (
    ColocationScheduler,
    Phase,
    ScheduleError,
    StaleWeightsError,
)
from megatron_uniapl.config.rollout import SamplingConfig
from megatron_uniapl.rollout.engine import Generation


class RecordingEngine:
    def __init__(self, offloader):
        self.offloader, self.calls, self.weight_version, self.report_version = offloader, [], 0, None

    def sleep(self, level=1):
        self.calls.append("sleep")

    def wake_up(self, tags=None):
        # the trainer's memory must be parked before the engine takes any back
        assert self.offloader.offloaded
        self.calls.append(f"wake:{','.join(tags)}")

    def update_weights(self, named_tensors, version):
        self.calls.append(f"update:{[n for n, _ in named_tensors]}:v{version}")
        self.weight_version = version if self.report_version is None else self.report_version

    def generate(self, prompt_ids, sampling, seeds=None):
        self.calls.append("generate")
        return [Generation(i, [1, 2, 3], [-1.0] * 3, "abc", "length") for i in range(len(prompt_ids))]


def trained_model():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.randn(3, 4)).square().sum().backward()
    optimizer.step()
    return model, optimizer


def make_scheduler(version):
    model, optimizer = trained_model()
    offloader = TensorOffloader(lambda: optimizer_state_tensors(optimizer), skip_on_offload_device=False)
    engine = RecordingEngine(offloader)
    return ColocationScheduler(engine, offloader, lambda: version[0]), engine, optimizer


def test_rollout_walks_the_design_order_and_records_metrics():
    version = [3]
    sched, engine, optimizer = make_scheduler(version)
    assert sched.phase is Phase.TRAIN
    gens = sched.rollout([("w", torch.zeros(2))], [[5, 6], [7]], SamplingConfig())
    assert engine.calls == ["sleep", "wake:weights", "update:['w']:v3", "wake:kv_cache", "generate", "sleep"]
    assert len(gens) == 2 and sched.phase is Phase.TRAIN and not sched.train_state.offloaded
    for step in ("offload", "wake_weights", "weight_sync", "wake_kv", "generate", "sleep", "onload"):
        assert sched.metrics[f"time/{step}_s"] >= 0
    state_bytes = sum(t.numel() * t.element_size() for t in optimizer_state_tensors(optimizer))
    assert sched.metrics["mem/offloaded_gib"] == pytest.approx(state_bytes / 2**30)
    assert sched.metrics["rollout/generated_tokens"] == 6
    assert "mem/generate_host_rss_gib" in sched.metrics


STEPS = [
    ("offload_train_state", ()),
    ("wake_weights", ()),
    ("sync_weights", ([], 0)),
    ("wake_kv_cache", ()),
    ("generate", ([[1]], SamplingConfig())),
    ("sleep_engine", ()),
    ("onload_train_state", ()),
]


@pytest.mark.parametrize("stop", range(len(STEPS)))
def test_every_step_refuses_the_wrong_phase(stop):
    sched, engine, _ = make_scheduler([0])
    for name, args in STEPS[:stop]:
        getattr(sched, name)(*args)
    phase = sched.phase
    for index, (name, args) in enumerate(STEPS):
        allowed = {4, 5} if phase is Phase.GENERATE else {stop}  # generate may repeat before sleep
        if index in allowed:
            continue
        with pytest.raises(ScheduleError, match=f"but the schedule is in {phase.value}"):
            getattr(sched, name)(*args)
        assert sched.phase is phase


def test_stale_weights_cannot_be_pushed_or_sampled():
    version = [2]
    sched, engine, _ = make_scheduler(version)
    sched.offload_train_state()
    sched.wake_weights()
    with pytest.raises(StaleWeightsError, match="given version 1, but the trainer is at 2"):
        sched.sync_weights([], 1)
    engine.report_version = 1  # an engine that did not take the push
    with pytest.raises(StaleWeightsError, match="engine reports version 1"):
        sched.sync_weights([], 2)
    engine.report_version = None
    sched.sync_weights([], 2)
    sched.wake_kv_cache()
    sched.generate([[1]], SamplingConfig())
    version[0] = 3  # the trainer moved on without a new push
    with pytest.raises(StaleWeightsError, match="holds weights version 2, the trainer is at 3"):
        sched.generate([[1]], SamplingConfig())


def test_offload_empties_storages_and_onload_restores_training_exactly():
    model, optimizer = trained_model()
    reference_model = copy.deepcopy(model)
    reference_opt = torch.optim.AdamW(reference_model.parameters(), lr=0.1)
    reference_opt.load_state_dict(copy.deepcopy(optimizer.state_dict()))
    offloader = TensorOffloader(lambda: optimizer_state_tensors(optimizer) + grad_tensors(model.parameters()),
                                skip_on_offload_device=False)
    expected = sum(t.untyped_storage().nbytes() for t in optimizer_state_tensors(optimizer))
    expected += sum(p.grad.untyped_storage().nbytes() for p in model.parameters())
    stats = offloader.offload()
    assert stats.num_bytes == expected and stats.num_storages == 3 * 4 + 4  # exp_avg, exp_avg_sq, step; grads
    assert all(t.untyped_storage().nbytes() == 0 for t in optimizer_state_tensors(optimizer))
    with pytest.raises(RuntimeError, match="already offloaded"):
        offloader.offload()
    assert offloader.onload().num_bytes == expected
    for m, opt in ((model, optimizer), (reference_model, reference_opt)):
        opt.zero_grad()
        m(torch.ones(2, 4)).sum().backward()
        opt.step()
    for p, q in zip(model.parameters(), reference_model.parameters()):
        assert torch.equal(p, q)
    with pytest.raises(RuntimeError, match="not offloaded"):
        offloader.onload()


def test_views_into_one_buffer_survive_and_move_once():
    buffer = torch.arange(12.0)  # like Megatron's contiguous grad buffer with main_grad views
    views = [buffer[:4], buffer[4:]]
    offloader = TensorOffloader(lambda: [buffer, *views], skip_on_offload_device=False)
    assert offloader.offload().num_storages == 1
    assert buffer.untyped_storage().nbytes() == 0
    offloader.onload()
    views[1].add_(1.0)
    assert buffer.tolist() == [0.0, 1.0, 2.0, 3.0] + [float(x) for x in range(5, 13)]


def test_default_skips_tensors_already_on_the_host():
    buffer = torch.ones(4)
    offloader = TensorOffloader(lambda: [buffer])
    assert offloader.offload().num_storages == 0 and buffer.untyped_storage().nbytes() == 16
    offloader.onload()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_offload_releases_device_memory_on_gpu():
    state = torch.randn(16 << 20, device="cuda")  # 64 MiB
    view = state[: 1 << 20]
    expected = state.cpu()
    offloader = TensorOffloader(lambda: [state, view])  # pinned, asynchronous copies by default
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    assert offloader.offload().num_bytes == 64 << 20
    assert before - torch.cuda.memory_allocated() >= 64 << 20
    offloader.onload()
    assert torch.cuda.memory_allocated() == before
    assert torch.equal(state.cpu(), expected) and view.data_ptr() == state.data_ptr()


def test_sync_check_runs_once_the_engine_can_score_and_its_error_propagates():
    from megatron_uniapl.rollout.weight_sync import SyncCheck, WeightSyncMismatchError

    sched, engine, _ = make_scheduler([1])
    seen = []

    def check(eng):
        seen.append(list(eng.calls))
        return SyncCheck(max_abs_diff=2e-6, mean_abs_diff=1e-6, num_tokens=5)

    sched.sync_check = check
    sched.rollout([], [[1]], SamplingConfig())
    assert seen == [["sleep", "wake:weights", "update:[]:v1", "wake:kv_cache"]]
    assert sched.metrics["weight_sync/logprob_max_abs_diff"] == 2e-6

    def mismatch(eng):
        raise WeightSyncMismatchError("differ")

    sched.sync_check = mismatch
    engine.calls.clear()
    with pytest.raises(WeightSyncMismatchError):
        sched.rollout([], [[1]], SamplingConfig())
    # the trainer gets its state back and the engine its sleep, ready for the next round
    assert sched.phase is Phase.TRAIN and not sched.train_state.offloaded
    assert engine.calls == ["wake:weights", "update:[]:v1", "wake:kv_cache", "sleep"]
    sched.sync_check = None
    assert len(sched.rollout([], [[1]], SamplingConfig())) == 1
