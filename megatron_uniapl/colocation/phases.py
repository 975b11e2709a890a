"""The co-location schedule: trainer and vLLM engine take turns on the same devices.

One rollout round walks a fixed path of phases, and each step checks that it starts from the
phase before it, so that an out-of-order call (generating before the weights were pushed,
training while the optimizer state is still in host memory) fails at once with a clear message
instead of producing stale samples or a crash:

    TRAIN --offload_train_state--> TRAIN_OFFLOADED --wake_weights--> WEIGHTS_AWAKE
      --sync_weights--> WEIGHTS_SYNCED --wake_kv_cache--> GENERATE (generate, any number)
      --sleep_engine--> ENGINE_ASLEEP --onload_train_state--> TRAIN

The weights pushed must be the trainer's current version, and `generate` re-checks that the
engine still holds it: sampling from stale weights raises `StaleWeightsError`.
Each step records its wall time and memory (`time/<step>_s`, `mem/<phase>_...`) in `metrics`.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable, Iterable

import torch

from megatron_uniapl.colocation.offload import TensorOffloader
from megatron_uniapl.config.rollout import SamplingConfig
from megatron_uniapl.rollout.engine import Generation, RolloutEngine
from megatron_uniapl.rollout.weight_sync import SyncCheck, SyncStats

logger = logging.getLogger(__name__)

GIB = 1 << 30

WeightSource = Iterable[tuple[str, torch.Tensor]] | Callable[[RolloutEngine, int], SyncStats | None]
"""What `sync_weights` pushes: (name, tensor) pairs, or a callable that pushes into the engine."""


class Phase(str, enum.Enum):
    """Who holds the devices."""

    TRAIN = "train"
    """Trainer state on the device; engine asleep."""
    TRAIN_OFFLOADED = "train_offloaded"
    """Optimizer state and gradients parked in host memory; engine still asleep."""
    WEIGHTS_AWAKE = "weights_awake"
    """Engine weights resident (old version); no KV cache yet."""
    WEIGHTS_SYNCED = "weights_synced"
    """Engine holds the trainer's current weights."""
    GENERATE = "generate"
    """KV cache allocated: the engine may sample."""
    ENGINE_ASLEEP = "engine_asleep"
    """Engine released its memory; trainer state still parked."""


class ScheduleError(RuntimeError):
    """A co-location step was called from the wrong phase."""


class StaleWeightsError(RuntimeError):
    """The engine's weights are not the trainer's current version."""


def memory_metrics(prefix: str) -> dict[str, float]:
    """Device memory (allocated now and peak since the last reset) when CUDA is present, and the
    process's resident host memory, in GiB."""
    out: dict[str, float] = {}
    if torch.cuda.is_available():
        out[f"mem/{prefix}_device_gib"] = torch.cuda.memory_allocated() / GIB
        out[f"mem/{prefix}_peak_gib"] = torch.cuda.max_memory_allocated() / GIB
    try:
        import psutil

        out[f"mem/{prefix}_host_rss_gib"] = psutil.Process().memory_info().rss / GIB
    except ImportError:  # psutil is a declared dependency; its absence only loses a metric
        pass
    return out


class ColocationScheduler:
    """Runs the phase order above over one engine and the trainer's offloadable state."""

    def __init__(
        self,
        engine: RolloutEngine,
        train_state: TensorOffloader,
        trainer_version: Callable[[], int],
        sync_check: Callable[[RolloutEngine], SyncCheck | None] | None = None,
    ) -> None:
        """`trainer_version()` returns the version of the trainer's current weights (e.g. the
        optimizer step count). `sync_check`, when given, runs after every weight push, once the
        KV cache is back (e.g. `weight_sync.verify_sync` on fixed sequences; it raises on a
        mismatch), and its figures join the metrics. The engine is put to sleep: the schedule
        starts in TRAIN. Memory metrics: `mem/<phase>_device_gib` and `mem/<phase>_peak_gib`
        (peak during the step that entered the phase; CUDA only), `mem/<phase>_host_rss_gib`."""
        self.engine = engine
        self.train_state = train_state
        self.trainer_version = trainer_version
        self.sync_check = sync_check
        self.metrics: dict[str, float] = {}
        engine.sleep(1)
        self.phase = Phase.TRAIN

    def _step(self, name: str, source: Phase, target: Phase, action: Callable[[], object]):
        if self.phase is not source:
            raise ScheduleError(f"{name} needs phase {source.value}, but the schedule is in {self.phase.value}")
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        result = action()
        self.metrics[f"time/{name}_s"] = time.perf_counter() - start
        self.phase = target
        self.metrics.update(memory_metrics(target.value))
        return result

    def offload_train_state(self) -> None:
        stats = self._step("offload", Phase.TRAIN, Phase.TRAIN_OFFLOADED, self.train_state.offload)
        self.metrics["mem/offloaded_gib"] = stats.num_bytes / GIB

    def wake_weights(self) -> None:
        self._step("wake_weights", Phase.TRAIN_OFFLOADED, Phase.WEIGHTS_AWAKE,
                   lambda: self.engine.wake_up(["weights"]))

    def sync_weights(self, weights: WeightSource, version: int) -> None:
        """Push the trainer's weights; `version` must be the trainer's current one.

        `weights` is either the (name, tensor) pairs to push, or a callable `push(engine,
        version)` that pushes them itself (e.g. `rollout.megatron_sync.MegatronWeightSync`,
        which gathers Megatron shards and broadcasts pipeline stages in buckets)."""
        current = self.trainer_version()
        if version != current:
            raise StaleWeightsError(f"sync_weights was given version {version}, but the trainer is at {current}")

        def push() -> None:
            if callable(weights):
                stats = weights(self.engine, version)
            else:
                stats = self.engine.update_weights(weights, version)
            if self.engine.weight_version != version:
                raise StaleWeightsError(
                    f"after the push the engine reports version {self.engine.weight_version}, not {version}"
                )
            if isinstance(stats, SyncStats):
                self.metrics.update(stats.metrics())

        self._step("weight_sync", Phase.WEIGHTS_AWAKE, Phase.WEIGHTS_SYNCED, push)

    def wake_kv_cache(self) -> None:
        """Allocate the KV cache; then run `sync_check`, the first point where the engine can score."""
        self._step("wake_kv", Phase.WEIGHTS_SYNCED, Phase.GENERATE, lambda: self.engine.wake_up(["kv_cache"]))
        if self.sync_check is not None:
            start = time.perf_counter()
            check = self.sync_check(self.engine)
            if check is not None:  # None: the check skipped this sync (e.g. every N syncs)
                self.metrics.update(check.metrics())
                self.metrics["time/sync_check_s"] = time.perf_counter() - start

    def generate(self, prompt_ids: list[list[int]], sampling: SamplingConfig,
                 seeds: list[int] | None = None) -> list[Generation]:
        """Sample in the GENERATE phase, from weights that are the trainer's current version
        (`seeds`: one per prompt, see `RolloutEngine.generate`)."""
        if self.engine.weight_version != self.trainer_version():
            raise StaleWeightsError(
                f"the engine holds weights version {self.engine.weight_version}, the trainer is at "
                f"{self.trainer_version()}: samples would be off-policy"
            )
        generations = self._step("generate", Phase.GENERATE, Phase.GENERATE,
                                 lambda: self.engine.generate(prompt_ids, sampling, seeds=seeds))
        self.metrics["rollout/generated_tokens"] = float(sum(len(g.token_ids) for g in generations))
        return generations

    def sleep_engine(self) -> None:
        self._step("sleep", Phase.GENERATE, Phase.ENGINE_ASLEEP, lambda: self.engine.sleep(1))

    def onload_train_state(self) -> None:
        self._step("onload", Phase.ENGINE_ASLEEP, Phase.TRAIN, self.train_state.onload)

    def rollout(
        self,
        named_tensors: WeightSource,
        prompt_ids: list[list[int]],
        sampling: SamplingConfig,
        seeds: list[int] | None = None,
    ) -> list[Generation]:
        """One whole round from TRAIN back to TRAIN, with the trainer's current weights.

        If a step fails, the trainer's state is brought back (see `return_to_train`) before the
        error propagates, so that the trainer can still checkpoint or stop cleanly."""
        self.metrics = {}
        try:
            self.offload_train_state()
            self.wake_weights()
            self.sync_weights(named_tensors, self.trainer_version())
            self.wake_kv_cache()
            generations = self.generate(prompt_ids, sampling, seeds)
            self.sleep_engine()
            self.onload_train_state()
        except BaseException:
            self.return_to_train()
            raise
        return generations

    def return_to_train(self) -> None:
        """From any phase back to TRAIN after a failure: engine asleep if it still responds,
        trainer state onloaded."""
        if self.phase is Phase.TRAIN:
            return
        if self.phase is not Phase.ENGINE_ASLEEP and self.phase is not Phase.TRAIN_OFFLOADED:
            try:
                self.engine.sleep(1)
            except Exception:  # a dead engine holds nothing the trainer needs back
                logger.exception("engine did not go to sleep while returning to TRAIN")
        if self.train_state.offloaded:
            self.train_state.onload()
        self.phase = Phase.TRAIN
