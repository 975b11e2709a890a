"""Rank-0 logging, the metrics sinks (JSONL always, wandb when configured) and a progress bar.

Every step's metrics are one JSON object per line in `<run_dir>/metrics.jsonl`, written and
flushed by rank 0 whatever else is configured: that file is the record a user can trust and
the input of `tools/scaling_report.py`. wandb is optional; without an API key it runs offline and
never prompts. Metric names are namespaced (`loss/sft`, `reward/task_mean`, `time/generate_s`).
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from pathlib import Path

import torch.distributed as dist

logger = logging.getLogger(__name__)


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else int(os.environ.get("RANK", "0"))


def setup_logging(debug: bool = False) -> None:
    """INFO on rank 0; WARNING elsewhere unless `debug` (then every rank, tagged)."""
    r = rank()
    level = logging.DEBUG if debug else (logging.INFO if r == 0 else logging.WARNING)
    logging.basicConfig(
        level=level, stream=sys.stderr, force=True,
        format=f"%(asctime)s [rank{r}] %(name)s: %(message)s" if debug or r else "%(asctime)s %(name)s: %(message)s",
    )
    # Third-party libraries stay quiet unless debugging.
    for noisy in ("megatron", "torch.distributed", "vllm", "transformers", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if debug else logging.WARNING)


def wandb_mode(requested: str | None) -> str | None:
    """The wandb mode to use: None (disabled), "offline", or "online" only with an API key.

    "auto" means online when WANDB_API_KEY is set and offline otherwise, so a run never stops to
    ask for a login.
    """
    if requested in (None, "", "disabled", "off"):
        return None
    if requested == "online" and not os.environ.get("WANDB_API_KEY"):
        logger.warning("wandb mode 'online' requested but WANDB_API_KEY is not set: logging offline")
        return "offline"
    if requested == "auto":
        return "online" if os.environ.get("WANDB_API_KEY") else "offline"
    if requested not in ("online", "offline"):
        raise ValueError(f"logging.wandb_mode must be auto, online, offline or disabled, got {requested!r}")
    return requested


def _jsonable(value):
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN/inf; keep them visible rather than dropping them
    return value


def truncate_metrics(path: str | Path, last_step: int) -> int:
    """Drop rows after `last_step` (left by a run that died after its last checkpoint).
    Returns the number of rows removed."""
    path = Path(path)
    if not path.is_file():
        return 0
    kept, dropped = [], 0
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            dropped += 1  # a partial last line from a crash
            continue
        if row.get("step", 0) <= last_step:
            kept.append(line)
        else:
            dropped += 1
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(line + "\n" for line in kept))
    os.replace(tmp, path)
    return dropped


class MetricsLogger:
    """Writes one JSON object per step (rank 0) and mirrors it to wandb when enabled."""

    def __init__(self, run_dir: str | Path, wandb: dict | None = None, config: dict | None = None, resume_step: int | None = None):
        self.enabled = rank() == 0
        self.path = Path(run_dir) / "metrics.jsonl"
        self._wandb = None
        if not self.enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is not None:
            removed = truncate_metrics(self.path, resume_step)
            if removed:
                logger.info("removed %d metric rows written after step %d (not checkpointed)", removed, resume_step)
        self._file = self.path.open("a")
        mode = wandb_mode((wandb or {}).get("mode"))
        if mode is not None:
            import wandb as wandb_lib

            os.environ.setdefault("WANDB_SILENT", "true")
            self._wandb = wandb_lib.init(
                project=wandb.get("project") or "megatron_uniapl", entity=wandb.get("entity"),
                name=wandb.get("name"), dir=str(Path(run_dir)), mode=mode, config=config or {},
                id=wandb.get("id"), resume="allow",
            )

    def log(self, step: int, metrics: dict) -> None:
        if not self.enabled:
            return
        row = {"step": step, "time": time.time(), **{k: _jsonable(v) for k, v in metrics.items()}}
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()
        if self._wandb is not None:
            self._wandb.log({k: v for k, v in row.items() if isinstance(v, (int, float))}, step=step)

    def close(self) -> None:
        if not self.enabled:
            return
        self._file.close()
        if self._wandb is not None:
            self._wandb.finish()


class Progress:
    """A progress bar with ETA on rank 0 (plain log lines when stderr is not a terminal)."""

    def __init__(self, total: int, initial: int = 0, enabled: bool = True):
        self.bar = None
        if enabled and rank() == 0:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, file=sys.stderr,
                            disable=None if sys.stderr.isatty() else False, mininterval=1.0)

    def update(self, postfix: dict | None = None) -> None:
        if self.bar is not None:
            if postfix:
                self.bar.set_postfix({k: f"{v:.4g}" if isinstance(v, float) else v for k, v in postfix.items()}, refresh=False)
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
