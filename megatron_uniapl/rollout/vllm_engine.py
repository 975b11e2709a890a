"""The product rollout engine: vLLM in the trainer's own process, with live weight updates.

One class serves the GPU build of vLLM and the CPU build used by the tests; vLLM's platform
decides which backend runs. The engine core runs in this process
(`VLLM_ENABLE_V1_MULTIPROCESSING=0`, which `external_launcher` implies anyway), because weight
updates hand tensors to the workers by reference (`vllm_worker.WeightSyncWorkerExtension`).

Failures are made explicit: input errors raise ValueError and leave the engine usable; an error
inside vLLM marks the engine dead (`EngineDeadError` on every later call), as does `shutdown`.
vLLM keeps its parallel groups in process globals and shutting one engine down breaks any other
in the process, so only one live engine per process is allowed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import weakref
from collections.abc import Iterable
from pathlib import Path

import torch

from megatron_uniapl.config.rollout import SamplingConfig, VLLMEngineConfig
from megatron_uniapl.rollout.engine import EngineDeadError, Generation
from megatron_uniapl.rollout.servable import check_servable, checkpoint_manifest
from megatron_uniapl.rollout.weight_manifest import UpdateTracker, WeightManifest
from megatron_uniapl.rollout.weight_sync import (
    DEFAULT_BUCKET_BYTES,
    SyncStats,
    push_weights,
)

logger = logging.getLogger(__name__)

_WORKER_EXTENSION = "megatron_uniapl.rollout.vllm_worker.WeightSyncWorkerExtension"
SLEEP_TAGS = ("weights", "kv_cache")
_live_engine: weakref.ref | None = None


@contextlib.contextmanager
def _default_process_group_kept():
    """vLLM's engine teardown ends by destroying torch's default process group, even one that
    the trainer created (co-location under torchrun); keep that one, let vLLM drop its own."""
    import torch.distributed as dist

    original = dist.destroy_process_group

    def destroy(group=None):
        if group is None:
            logger.info("vLLM shutdown: kept the trainer's default process group")
            return
        original(group)

    dist.destroy_process_group = destroy
    try:
        yield
    finally:
        dist.destroy_process_group = original


@contextlib.contextmanager
def _unique_cpu_shm_names(active: bool):
    """vLLM's CPU communicator names its shared-memory segment after the port of its init method,
    which is the constant "env://" under external_launcher: two co-located CPU worlds on one
    machine (two test runs) then create the same segment and the second fails with "create shm
    in SHMManager failed. errno: 17". The trainer world's MASTER_PORT, the same on all its ranks
    and unique on the machine while it runs, is appended to the name during start-up."""
    if not active:
        yield
        return
    from vllm.distributed.device_communicators.cpu_communicator import (
        _CPUSHMDistributed,
    )

    original = _CPUSHMDistributed.__dict__["make_group_name"]
    suffix = os.environ.get("MASTER_PORT", "0")
    _CPUSHMDistributed.make_group_name = staticmethod(lambda comm: f"{original.__func__(comm)}-{suffix}")
    try:
        yield
    finally:
        _CPUSHMDistributed.make_group_name = original


def _validate_sampling(sampling: SamplingConfig) -> None:
    if sampling.n < 1:
        raise ValueError(f"SamplingConfig.n must be >= 1, got {sampling.n}")
    if sampling.temperature < 0:
        raise ValueError(f"SamplingConfig.temperature must be >= 0, got {sampling.temperature}")
    if not 0.0 < sampling.top_p <= 1.0:
        raise ValueError(f"SamplingConfig.top_p must be in (0, 1], got {sampling.top_p}")
    if sampling.max_tokens < 1:
        raise ValueError(f"SamplingConfig.max_tokens must be >= 1, got {sampling.max_tokens}")


class VLLMEngine:
    """`RolloutEngine` over vLLM's offline `LLM`, started from a Hugging Face model directory.

    `weight_version` is the version of the checkpoint the engine starts from (0 unless given).
    """

    def __init__(
        self,
        model_dir: str | Path,
        config: VLLMEngineConfig | None = None,
        weight_version: int = 0,
        dummy_weights: bool = False,
    ) -> None:
        """`dummy_weights`: start without reading the checkpoint's weights (their shapes come
        from its config and safetensors headers); for an engine whose weights are pushed before
        its first use, as the trainer's are (at 32B this skips reading 65 GB per node). Such an
        engine refuses to generate or score until a complete weight update arrives."""
        global _live_engine
        self.dummy_weights = dummy_weights
        self.config = config or VLLMEngineConfig()
        self.config.validate()
        self.model_dir = Path(model_dir)
        from vllm.platforms import current_platform

        self.on_cpu = current_platform.is_cpu()
        self.hf_config = check_servable(self.model_dir, on_cpu=self.on_cpu)
        self._manifest = WeightManifest(
            checkpoint_manifest(self.model_dir), bool(self.hf_config.get("tie_word_embeddings", False))
        )
        if self.on_cpu and self.config.enable_sleep_mode:
            raise ValueError("enable_sleep_mode: vLLM's CPU platform has no sleep mode; leave it False there")
        if self.on_cpu and self.config.kv_cache_memory_bytes is None:
            raise ValueError(
                "kv_cache_memory_bytes: set it on the CPU platform (e.g. 128 MiB for a tiny model); "
                "there gpu_memory_utilization is a fraction of host RAM and fails on shared machines"
            )
        other = _live_engine() if _live_engine is not None else None
        if other is not None and other._llm is not None:
            raise RuntimeError(
                f"a VLLMEngine for {other.model_dir} is still live in this process; shut it down "
                "first (vLLM keeps its parallel groups in process globals, so shutting down one "
                "engine breaks the others)"
            )
        self.weight_version = weight_version
        self._dead_reason: str | None = None
        self._asleep: set[str] = set()
        self._weights_mixed = False
        self._placeholder_weights = dummy_weights
        self._update: UpdateTracker | None = None
        # A world that exists before vLLM starts belongs to the trainer and must outlive the engine.
        self._trainer_world = torch.distributed.is_available() and torch.distributed.is_initialized()
        self._llm = self._start()
        _live_engine = weakref.ref(self)

    def _start(self):
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        from vllm import LLM

        cfg = self.config
        kwargs = dict(
            tensor_parallel_size=cfg.tensor_parallel_size,
            dtype=cfg.dtype,
            max_model_len=cfg.max_model_len,
            seed=cfg.seed,
            enforce_eager=cfg.enforce_eager,
            enable_sleep_mode=cfg.enable_sleep_mode,
            gpu_memory_utilization=cfg.gpu_memory_utilization,
            kv_cache_memory_bytes=cfg.kv_cache_memory_bytes,
            logprobs_mode=cfg.logprobs_mode,
            # Random weights of the right shapes, not read from disk: the trainer's first sync
            # overwrites every tensor before anything is generated (`dummy_weights`).
            load_format="dummy" if self.dummy_weights else "auto",
            disable_custom_all_reduce=cfg.disable_custom_all_reduce,
            worker_extension_cls=_WORKER_EXTENSION,
        )
        if cfg.distributed_executor_backend is not None:
            kwargs["distributed_executor_backend"] = cfg.distributed_executor_backend
        if cfg.block_size is not None:
            kwargs["block_size"] = cfg.block_size
        logger.info("starting vLLM (%s) for %s", "CPU" if self.on_cpu else "GPU", self.model_dir)
        shared_world = self.on_cpu and cfg.distributed_executor_backend == "external_launcher"
        try:
            with _unique_cpu_shm_names(shared_world):
                return LLM(str(self.model_dir), **kwargs)
        except Exception as err:
            raise RuntimeError(
                f"vLLM failed to start for {self.model_dir}: {type(err).__name__}: {err}"
            ) from err

    # ---- state checks -------------------------------------------------------------------

    @property
    def alive(self) -> bool:
        return self._dead_reason is None

    @property
    def block_size(self) -> int:
        """KV-cache block size in tokens (prefix caching reuses whole blocks)."""
        return self._llm.llm_engine.vllm_config.cache_config.block_size

    def _check_alive(self) -> None:
        if self._dead_reason is not None:
            raise EngineDeadError(f"the vLLM engine for {self.model_dir} is dead: {self._dead_reason}")

    def _check_ready(self, what: str) -> None:
        self._check_alive()
        if self._asleep:
            asleep = ", ".join(sorted(self._asleep))
            raise RuntimeError(f"{what}: the engine is asleep ({asleep}); call wake_up first")
        if self._placeholder_weights:
            raise RuntimeError(
                f"{what}: the engine started with placeholder weights (dummy_weights); push a "
                "complete weight update first"
            )
        if self._weights_mixed:
            raise RuntimeError(
                f"{what}: a weight update failed part-way, so the engine holds a mix of old and new "
                "weights; push a complete update first"
            )
        if self._update is not None:
            raise RuntimeError(f"{what}: a weight update is in progress")

    def _call_vllm(self, fn, *args, **kwargs):
        """Run a vLLM call; errors other than input errors leave the engine dead."""
        from vllm.exceptions import VLLMClientError

        try:
            return fn(*args, **kwargs)
        except (ValueError, TypeError, VLLMClientError):
            raise
        except Exception as err:
            self._dead_reason = f"{type(err).__name__}: {err}"
            raise EngineDeadError(f"the vLLM engine failed and is now dead: {self._dead_reason}") from err

    def _check_prompts(self, prompts: list[list[int]], what: str) -> None:
        limit = self.config.max_model_len
        vocab = self.hf_config.get("vocab_size")
        for index, ids in enumerate(prompts):
            if len(ids) == 0:
                raise ValueError(f"{what} {index} is empty")
            if len(ids) >= limit:
                raise ValueError(
                    f"{what} {index} has {len(ids)} tokens; max_model_len {limit} allows at most {limit - 1}"
                )
            if vocab is not None:
                bad = next((pos for pos, tok in enumerate(ids) if not 0 <= tok < vocab), None)
                if bad is not None:
                    raise ValueError(f"{what} {index}, position {bad}: token id {ids[bad]} is outside the "
                                     f"vocabulary (size {vocab})")

    # ---- generation and scoring ---------------------------------------------------------

    def generate(
        self, prompt_ids: list[list[int]], sampling: SamplingConfig, seeds: list[int] | None = None
    ) -> list[Generation]:
        """`sampling.n` samples per prompt, prompt-major.

        `seeds` (one per prompt) seed each prompt's request; vLLM gives its j-th sample the seed
        `seeds[i] + j` (see `rollout.seeds` for seeds that never overlap). Without them, a
        `sampling.seed` seeds prompt i with `sampling.seed + i`, so that a prompt repeated in one
        call still gets different samples while the whole call stays reproducible. A sample cut
        by a stop string keeps the tokens vLLM generated up to the stop string's last token,
        while its text ends before the stop string."""
        self._check_ready("generate")
        _validate_sampling(sampling)
        self._check_prompts(prompt_ids, "prompt")
        if seeds is not None and len(seeds) != len(prompt_ids):
            raise ValueError(f"{len(seeds)} seeds for {len(prompt_ids)} prompts")
        if not prompt_ids:  # an engine with no share of this step's prompts
            return []
        from vllm import SamplingParams

        if seeds is None:
            seeds = [None if sampling.seed is None else sampling.seed + i for i in range(len(prompt_ids))]

        params = [
            SamplingParams(
                n=sampling.n,
                temperature=sampling.temperature,
                top_p=sampling.top_p,
                max_tokens=sampling.max_tokens,
                stop=list(sampling.stop) or None,
                seed=seed,
                logprobs=0,
            )
            for seed in seeds
        ]
        requests = [{"prompt_token_ids": list(ids)} for ids in prompt_ids]
        outputs = self._call_vllm(self._llm.generate, requests, params, use_tqdm=False)
        generations = []
        for index, request in enumerate(outputs):
            for sample in request.outputs:
                token_ids = list(sample.token_ids)
                logprobs = [step[token].logprob for step, token in zip(sample.logprobs, token_ids)]
                generations.append(
                    Generation(index, token_ids, logprobs, sample.text, sample.finish_reason or "length")
                )
        return generations

    def score(self, sequences: list[list[int]], prompt_lens: list[int]) -> list[list[float]]:
        """Log-prob of each token after its prompt, `[len(seq) - prompt_len]` per sequence.

        Uses vLLM's prompt log-probs: the whole sequence is the prompt, one token is generated
        and discarded. Requests with prompt log-probs do not read the prefix cache.
        """
        self._check_ready("score")
        if len(sequences) != len(prompt_lens):
            raise ValueError(f"{len(sequences)} sequences but {len(prompt_lens)} prompt lengths")
        for index, (seq, plen) in enumerate(zip(sequences, prompt_lens)):
            if not 1 <= plen <= len(seq):
                raise ValueError(f"sequence {index}: prompt_len {plen} must be in [1, {len(seq)}]")
        self._check_prompts(sequences, "sequence")
        from vllm import SamplingParams

        params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0)
        requests = [{"prompt_token_ids": list(seq)} for seq in sequences]
        outputs = self._call_vllm(self._llm.generate, requests, params, use_tqdm=False)
        scores = []
        for seq, plen, request in zip(sequences, prompt_lens, outputs):
            per_position = request.prompt_logprobs  # entry i: log p(seq[i] | seq[:i]); entry 0 is None
            scores.append([per_position[i][seq[i]].logprob for i in range(plen, len(seq))])
        return scores

    # ---- weight updates -----------------------------------------------------------------

    def update_weights(
        self,
        named_tensors: Iterable[tuple[str, torch.Tensor]],
        version: int,
        bucket_bytes: int = DEFAULT_BUCKET_BYTES,
    ) -> SyncStats:
        """Push a complete set of Hugging Face-named tensors (every tensor of the checkpoint)."""
        return push_weights(self, named_tensors, version, bucket_bytes)

    def weight_shapes(self) -> dict[str, tuple[int, ...]]:
        """Hugging Face name -> full shape of every tensor a complete update must contain (the
        checkpoint's; with tied embeddings there is no `lm_head.weight`)."""
        return dict(self._manifest.shapes)

    def begin_weight_update(self) -> None:
        self._check_alive()
        if "weights" in self._asleep:
            raise RuntimeError("update_weights: the engine's weights are asleep; wake_up(['weights']) first")
        if self._update is not None:
            raise RuntimeError("update_weights: another weight update is in progress")
        self._call_vllm(self._llm.collective_rpc, "uniapl_begin_weight_update")
        self._update = self._manifest.start_update()

    def load_weight_bucket(self, bucket: list[tuple[str, torch.Tensor]]) -> None:
        """Check every name and shape of the bucket, then load it into the live engine."""
        self._check_alive()
        if self._update is None:
            raise RuntimeError("load_weight_bucket outside begin_weight_update/finish_weight_update")
        to_send = self._update.check_bucket(bucket)
        if to_send:
            self._update.loaded_any = True
            self._call_vllm(self._llm.collective_rpc, "uniapl_load_weights", args=(to_send,))

    def finish_weight_update(self, version: int | None) -> None:
        """Close the update; `version` None marks it aborted. Resets the prefix cache."""
        self._check_alive()
        if self._update is None:
            raise RuntimeError("finish_weight_update without begin_weight_update")
        update, self._update = self._update, None
        self._call_vllm(self._llm.collective_rpc, "uniapl_finish_weight_update")
        # Cached KV blocks were computed with the old weights; a prompt sharing a prefix with an
        # earlier one would otherwise reuse them.
        self._call_vllm(self._llm.reset_prefix_cache)
        if version is None:
            if update.loaded_any:
                self._weights_mixed = True
                logger.error("weight update aborted part-way: the engine holds a mix of old and new weights")
            return
        missing = update.missing()
        if missing:
            self._weights_mixed = True
            raise ValueError(
                f"update_weights: {len(missing)} tensors of the engine's model were not sent, e.g. "
                f"{missing[:3]}; the engine now holds a mix of weights"
            )
        self._weights_mixed = False
        self._placeholder_weights = False
        self.weight_version = version

    # ---- memory -------------------------------------------------------------------------

    def sleep(self, level: int = 1) -> None:
        """Release weights and KV cache (level 1: weights kept in host memory, restored on wake).

        Level 2 (weights discarded) is not offered: restoring it needs a full weight push and
        resetting buffers that vLLM does not back up, which cannot be tested without a GPU here.
        """
        self._check_alive()
        if level != 1:
            raise ValueError(f"sleep level {level} is not offered; use level 1")
        if self.config.enable_sleep_mode:
            self._call_vllm(self._llm.sleep, level=1)
        else:
            logger.info(
                "sleep: memory stays allocated (%s)",
                "vLLM's CPU platform has no sleep mode" if self.on_cpu else "enable_sleep_mode is off",
            )
        self._asleep = set(SLEEP_TAGS)

    def wake_up(self, tags: list[str] | None = None) -> None:
        """Re-acquire "weights", "kv_cache", or both (None)."""
        self._check_alive()
        wanted = list(SLEEP_TAGS) if tags is None else list(tags)
        unknown = [t for t in wanted if t not in SLEEP_TAGS]
        if unknown:
            raise ValueError(f"wake_up: unknown tags {unknown}; known: {list(SLEEP_TAGS)}")
        if self.config.enable_sleep_mode:
            self._call_vllm(self._llm.wake_up, tags=wanted)
        self._asleep -= set(wanted)

    @property
    def asleep(self) -> frozenset[str]:
        """What is released now: a subset of {"weights", "kv_cache"}."""
        return frozenset(self._asleep)

    def shutdown(self) -> None:
        """Stop the engine. In co-location, call it before destroying torch.distributed groups
        (vLLM's teardown uses them); the trainer's default group stays usable afterwards."""
        if self._dead_reason == "shut down":
            return
        self._dead_reason = "shut down"
        llm, self._llm = self._llm, None
        keep = _default_process_group_kept() if self._trainer_world else contextlib.nullcontext()
        try:
            with keep:
                llm.llm_engine.engine_core.shutdown()
        finally:
            del llm
