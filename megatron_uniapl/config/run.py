"""The run-management sections of a run's configuration: optimizer, length, checkpoints, logs, plan.

Split from `sections` (the algorithm's sections) to keep files small; `RunConfig` there
composes both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass
class OptimizerSection:
    """The policy's Adam optimizer and learning-rate schedule."""

    lr: float = 1e-6
    """Peak learning rate (the paper: ~1e-5 SFT-like, ~1e-6 RL-like, ~2e-6 mixed at 0.6B)."""
    min_lr: float = 0.0
    """Learning rate at the end of the decay."""
    warmup_steps: int = 0
    """Steps of linear warm-up from 0 to `lr`."""
    decay: Literal["constant", "linear", "cosine"] = "constant"
    """Shape of the decay from `lr` to `min_lr` over the steps after warm-up."""
    weight_decay: float = 0.0
    """Decoupled (AdamW) weight decay."""
    betas: tuple[float, float] = (0.9, 0.999)
    """Adam beta1 and beta2."""
    eps: float = 1e-8
    """Adam epsilon."""
    clip_grad: float = 1.0
    """Maximum global gradient norm; 0 disables clipping."""
    use_distributed_optimizer: bool = True
    """Shard optimizer state (fp32 master weights, Adam moments) over data-parallel ranks."""

    def validate(self) -> None:
        if self.lr <= 0 or self.min_lr < 0 or self.min_lr > self.lr:
            raise ValueError(f"optimizer needs lr > 0 and 0 <= min_lr <= lr, got lr={self.lr}, min_lr={self.min_lr}")
        if self.warmup_steps < 0 or self.weight_decay < 0 or self.eps <= 0 or self.clip_grad < 0:
            raise ValueError("optimizer.warmup_steps, weight_decay, clip_grad must be >= 0 and eps > 0")
        if not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"optimizer.betas must be in [0, 1), got {list(self.betas)}")


@dataclass
class TrainSection:
    """The length and batching of the run."""

    steps: int = 100
    """Training steps in total, over all stages. A step is one batch of demonstrations and
    rollouts, trained on with `mini_batches` x `epochs` optimizer updates (1 by default); stages,
    the mu schedule, checkpoints and metrics rows count steps."""
    mini_batches: int = 1
    """Optimizer updates per pass over a step's batch: the demonstrations and the rollout groups
    are dealt round-robin into this many mini-batches, each normalized by its own token counts.
    The old log-probs are computed once, before the first update, so from the second update on
    the ratio pi/pi_old moves away from 1 and clipping (and TIS) act. 1: one update per step."""
    epochs: int = 1
    """Passes over the step's mini-batches (PPO epochs)."""
    seed: int = 0
    """The run's seed: rollout sampling, Megatron's RNG, the discriminator head's initialization,
    the data order (unless `data.shuffle_seed` is set) and, with `model.create_tiny`, the tiny
    model's weights (a directory created with another seed is refused, not silently reused)."""
    micro_batch_tokens: int = 8192
    """Token budget of one packed micro-batch per rank (samples are packed up to it)."""
    max_nonfinite_steps: int = 3
    """Stop after this many consecutive steps with a non-finite loss or gradient (each skipped)."""
    device: Literal["auto", "cuda"] = "auto"
    """"cuda": refuse to start unless a CUDA GPU is usable, naming what is missing (the GPU recipes
    set it); "auto": the GPU when CUDA is usable, otherwise the CPU path (gloo and Megatron-Core's
    CPU support: tests, the CPU demo)."""
    process_group_timeout_s: float = 1800.0
    """How long a rank waits in a collective before the job fails (torch.distributed's timeout,
    NCCL's watchdog). Start-up (every rank reading its weights), the first weight sync and
    checkpoint saves can keep some ranks away from the next collective for many minutes at 32B;
    too short a value kills a healthy job, too long a value delays the failure of a hung one."""

    @property
    def updates_per_step(self) -> int:
        """Optimizer updates per training step (what learning-rate schedules count)."""
        return self.mini_batches * self.epochs

    def validate(self) -> None:
        for name in ("steps", "micro_batch_tokens", "max_nonfinite_steps", "mini_batches", "epochs"):
            if getattr(self, name) < 1:
                raise ValueError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        if self.process_group_timeout_s <= 0:
            raise ValueError(f"train.process_group_timeout_s must be > 0, got {self.process_group_timeout_s}")


@dataclass
class CheckpointSection:
    """When and where checkpoints are written, and what a start resumes from."""

    dir: str | None = None
    """Checkpoint directory; None = `<logging.run_dir>/checkpoints`."""
    every: int = 100
    """Save every this many optimizer steps (and at the end); 0 = only at the end."""
    keep_last: int = 2
    """Checkpoints kept; older ones are deleted after a newer one is complete."""
    enabled: bool = True
    """false = write no checkpoint at all, not even at the end (scaling studies, benchmarks)."""
    resume: str = "auto"
    """"auto": resume from the latest checkpoint in `dir` if any; "none": start fresh
    (refused if `dir` already has checkpoints); otherwise a checkpoint path to resume from."""

    def validate(self) -> None:
        if self.every < 0 or self.keep_last < 1:
            raise ValueError(f"checkpoint.every must be >= 0 and keep_last >= 1, got {self.every}, {self.keep_last}")
        if not self.resume:
            raise ValueError("checkpoint.resume is empty; use 'auto', 'none' or a path")


@dataclass
class EvalSection:
    """Held-out evaluation during training, through the co-located engine."""

    file: str | None = None
    """IFEval-format JSONL of held-out prompts (key, prompt, instruction_id_list, kwargs), as
    `tools/eval.py` reads; checked record by record before the run starts."""
    every: int = 0
    """Evaluate after every N-th step (greedy, one response per prompt) and log `eval/*` with
    that step's metrics; 0 = never."""
    limit: int | None = None
    """Evaluate the first N prompts of the file only (a cheaper, noisier figure)."""
    max_tokens: int | None = None
    """Longest greedy response, in tokens; None: `rollout.sampling.max_tokens`."""

    def validate(self) -> None:
        if self.every < 0:
            raise ValueError(f"eval.every must be >= 0, got {self.every}")
        if self.every and not self.file:
            raise ValueError(f"eval.every is {self.every} but eval.file is not set")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"eval.limit must be >= 1 or null, got {self.limit}")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise ValueError(f"eval.max_tokens must be >= 1, got {self.max_tokens}")


@dataclass
class LoggingSection:
    """Where metrics go."""

    run_dir: str = "runs/default"
    """Directory of this run: resolved config, metrics.jsonl, logs, default checkpoint dir."""
    wandb_project: str | None = None
    """Weights & Biases project; None = no wandb (metrics.jsonl is always written)."""
    wandb_entity: str | None = None
    """Weights & Biases entity (team or user); None = the default of the API key."""
    wandb_mode: Literal["auto", "online", "offline", "disabled"] = "auto"
    """"auto": online when an API key is configured, offline otherwise (never prompts)."""
    log_every: int = 1
    """Print a metrics line every this many steps (metrics.jsonl gets every step)."""
    progress_bar: bool = True
    """Show a progress bar with ETA on rank 0."""
    all_ranks: bool = False
    """Log from every rank (debugging) instead of rank 0 only."""

    def validate(self) -> None:
        if self.log_every < 1:
            raise ValueError(f"logging.log_every must be >= 1, got {self.log_every}")


@dataclass
class PlanSection:
    """The cluster a recipe is sized for. Informational for the run (Slurm allocates the real one);
    the scaling model (megatron_uniapl/planning) checks the recipe's memory against it."""

    nodes: int = 1
    """Nodes the layout was planned for."""
    gpus_per_node: int = 8
    """GPUs per node."""
    gpu_memory_gib: float = 80.0
    """Memory per GPU in GiB (H100 80GB)."""
    resident_gib: float = 0.0
    """Other memory resident on every GPU in both phases, in GiB (e.g. a frozen discriminator's
    bf16 weights: 2 bytes x its parameters)."""
    arch: str | None = None
    """Shipped Qwen3 size of recipes/models/qwen3_<arch>.json ("0p6b", "1p7b", "4b", "8b", "14b",
    "32b") that the scaling model plans with; None = read model.hf_dir/config.json."""

    @property
    def world(self) -> int:
        return self.nodes * self.gpus_per_node

    def validate(self) -> None:
        if self.nodes < 1 or self.gpus_per_node < 1 or self.gpu_memory_gib <= 0 or self.resident_gib < 0:
            raise ValueError("plan.nodes and plan.gpus_per_node must be >= 1, plan.gpu_memory_gib > 0, "
                             "plan.resident_gib >= 0")
