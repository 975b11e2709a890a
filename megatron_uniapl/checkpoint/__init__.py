"""Training checkpoints: Megatron distributed checkpoints plus the run's resumable state.

    iter_0000020/
      weights/            dist_checkpointing: model + optimizer sharded state (any TP/PP/DP)
      state.json          rank 0: {part: part.state_dict()} (LR schedule, data streams, loop)
      ranks/rank{r}.pt    each rank: its RNG streams and per-rank parts (tensors, plain data)
      hf/, uniapl_model.json   the model files: a training checkpoint is also a model checkpoint
      uniapl_train.json   written last: marks the directory complete (step, model, optimizer)
    latest                the name of the newest complete iteration, replaced atomically

`layout` (names, markers, cleanup; torch-free), `storage` (writable, free space), `state` (the
`Stateful` protocol and the two code-free file formats), `collective` (save and load on all
ranks, after `convert.dcp_check` has read PyTorch's distributed-checkpoint files safely),
`training_state` (Megatron's sharded state of model and optimizer), `resume` (which checkpoint
a run continues from, compatibility checks, fallback to an older one).
"""

from megatron_uniapl.checkpoint.collective import (
    LoadedCheckpoint,
    all_ranks_ok,
    load_checkpoint,
    save_checkpoint,
)
from megatron_uniapl.checkpoint.layout import (
    FORMAT,
    LATEST,
    MARKER,
    CheckpointError,
    UnreadableCheckpointError,
    complete_iterations,
    iteration_name,
    latest_checkpoint,
    read_marker,
    resume_candidates,
)
from megatron_uniapl.checkpoint.state import RNGStreams, Stateful
from megatron_uniapl.checkpoint.training_state import (
    apply_training_state,
    model_sharded_state,
    training_sharded_state,
)

__all__ = [
    "FORMAT", "LATEST", "MARKER", "CheckpointError", "LoadedCheckpoint", "RNGStreams", "Stateful",
    "UnreadableCheckpointError", "all_ranks_ok", "apply_training_state", "complete_iterations",
    "iteration_name", "latest_checkpoint", "load_checkpoint", "model_sharded_state", "read_marker",
    "resume_candidates", "save_checkpoint", "training_sharded_state",
]
