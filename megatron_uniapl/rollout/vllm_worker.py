"""Methods injected into every vLLM worker (`worker_extension_cls`) to receive new weights.

vLLM's `reload_weights` takes all tensors of an update in one call. A co-located trainer sends
its weights in buckets instead, so that memory stays bounded by one bucket. These methods run
the same three steps `reload_weights` runs (vLLM's layer-wise reload), but spread over calls:

1. `uniapl_begin_weight_update`: arm layer-wise reloading (each layer's parameters are staged
   until all of them arrived, then processed into the backend's kernel layout, e.g. the CPU
   backend's repacked linear weights, and copied into the live storage);
2. `uniapl_load_weights`: one bucket of Hugging Face-named tensors through the model's
   `load_weights` (which fuses q/k/v and gate/up and slices tensor-parallel shards);
3. `uniapl_finish_weight_update`: finalize layers that are still pending and drop caches derived
   from the old weights.

The plain `model.load_weights` on a live engine does not work on the CPU backend (its linear
weights are repacked), which is why the reload machinery is used. The tensors arrive by
reference: this needs the engine core in the calling process (`VLLM_ENABLE_V1_MULTIPROCESSING=0`,
implied by `external_launcher`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch

_RELOAD_LOGGER = "vllm.model_executor.model_loader.reload.layerwise"


class _RotaryReloadNotice(logging.Filter):
    """Drops vLLM's "RotaryEmbedding: Failed to load weights" warning, logged at every reload:
    rotary layers hold only a cos/sin cache computed from the config, nothing to load."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (
            record.msg == "%s: Failed to load weights"
            and record.args
            and str(record.args[0]).endswith("RotaryEmbedding")
        )


class WeightSyncWorkerExtension:
    """Mixed into vLLM's worker class; `self` is the worker (it has `model_runner`, `vllm_config`)."""

    def uniapl_begin_weight_update(self) -> None:
        from vllm.config import set_current_vllm_config
        from vllm.model_executor.model_loader.reload.layerwise import (
            initialize_layerwise_reload,
        )

        with set_current_vllm_config(self.vllm_config):
            initialize_layerwise_reload(self.model_runner.get_model())

    def uniapl_load_weights(self, named_tensors: Sequence[tuple[str, torch.Tensor]]) -> int:
        """Load one bucket; returns how many vLLM parameters it touched."""
        from vllm.config import set_current_vllm_config

        with set_current_vllm_config(self.vllm_config), torch.no_grad():
            loaded = self.model_runner.get_model().load_weights(iter(named_tensors))
        return len(loaded) if loaded is not None else 0

    def uniapl_finish_weight_update(self) -> None:
        from vllm.config import set_current_vllm_config
        from vllm.model_executor.model_loader.reload.layerwise import (
            finalize_layerwise_reload,
        )

        notice = _RotaryReloadNotice()
        logging.getLogger(_RELOAD_LOGGER).addFilter(notice)
        try:
            with set_current_vllm_config(self.vllm_config):
                finalize_layerwise_reload(self.model_runner.get_model(), self.vllm_config.model_config)
        finally:
            logging.getLogger(_RELOAD_LOGGER).removeFilter(notice)
        # The same caches vLLM's own reload_weights drops; text-only runs have none of them
        # filled, but a LoRA or multimodal configuration would.
        for reset in ("reset_lora_state", "reset_encoder_cache", "reset_mm_cache"):
            getattr(self.model_runner, reset, lambda: None)()
