"""The run's reporter: each step's metrics to the record (metrics.jsonl, wandb), the progress bar,
and the history the CLI summarizes."""

from __future__ import annotations

from typing import TYPE_CHECKING

from megatron_uniapl.metrics.sinks import MetricsLogger, Progress

if TYPE_CHECKING:
    from megatron_uniapl.config.sections import RunConfig

BAR_KEYS = ("loss/total", "reward/task_mean")
"""Metrics shown next to the progress bar."""


class StepReporter:
    """Owns the metric sinks of one training invocation (rank 0 writes; other ranks only count)."""

    def __init__(self, config: RunConfig, resume_step: int):
        self.config = config
        log = config.logging
        self.sink = MetricsLogger(log.run_dir, resume_step=resume_step, config={"name": config.name},
                                  wandb={"mode": log.wandb_mode, "project": log.wandb_project,
                                         "entity": log.wandb_entity, "name": config.name},
                                  log_every=log.log_every, last_step=config.train.steps)
        self.progress = Progress(config.train.steps, initial=resume_step, enabled=log.progress_bar)
        self.history: list[dict] = []

    def report(self, step: int, metrics: dict) -> None:
        """Record one finished step (`step` counts finished optimizer steps, from 1)."""
        self.history.append({"step": step, **metrics})
        self.sink.log(step, metrics)  # every step to the record; the sink thins console and wandb
        self.progress.update({k: metrics[k] for k in BAR_KEYS if metrics.get(k) is not None})

    def close(self) -> None:
        self.progress.close()
        self.sink.close()
