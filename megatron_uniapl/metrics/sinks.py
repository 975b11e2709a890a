"""Rank-0 logging, the metrics sinks (JSONL always, wandb when configured) and a progress bar.

Every step's metrics are one JSON object per line in `<run_dir>/metrics.jsonl`, written and
flushed by rank 0 at every step whatever else is configured (`logging.log_every` only thins the
console lines and wandb): that file is the record a user can trust and
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


PROJECT_LOGGERS = ("megatron_uniapl", "__main__")
"""Loggers whose INFO lines the console shows; others show from ERROR (all go to the log file)."""
RUN_LOG = "train.log"
"""Everything logged at INFO and above, by every library, in the run directory (rank 0)."""


class _ConsoleFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR or record.name.startswith(PROJECT_LOGGERS)


class _ConsoleHandler(logging.StreamHandler):
    """Writes above an active progress bar instead of through it."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm

            tqdm.write(self.format(record), file=self.stream)
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)


def setup_logging(debug: bool = False) -> None:
    """Console: the project's INFO lines on rank 0 (WARNING elsewhere) and other libraries'
    errors; `debug`: everything on every rank, tagged. `add_run_log` adds the full log file."""
    r = rank()
    fmt = f"%(asctime)s [rank{r}] %(name)s: %(message)s" if debug or r else "%(asctime)s %(name)s: %(message)s"
    console = _ConsoleHandler(sys.stderr)
    console.setFormatter(logging.Formatter(fmt))
    console.setLevel(logging.DEBUG if debug else (logging.INFO if r == 0 else logging.WARNING))
    if not debug:
        console.addFilter(_ConsoleFilter())
    logging.basicConfig(level=logging.DEBUG if debug else logging.INFO, handlers=[console], force=True)
    logging.captureWarnings(True)  # library deprecation notices go to the log file, not the console
    # vLLM configures its own stdout handler unless told not to; then its lines reach ours.
    os.environ.setdefault("VLLM_CONFIGURE_LOGGING", "0")
    # Their INFO lines reach the log file only (the console filter drops them). torch and
    # transformers print through handlers of their own, so they stay at WARNING.
    for name, level in (("megatron", logging.INFO), ("vllm", logging.INFO), ("py.warnings", logging.INFO),
                        ("torch.distributed", logging.WARNING), ("transformers", logging.WARNING),
                        ("urllib3", logging.WARNING)):
        logging.getLogger(name).setLevel(logging.DEBUG if debug else level)


def add_run_log(run_dir: str | Path) -> Path | None:
    """Rank 0: append every log line (all libraries) to `<run_dir>/train.log`."""
    if rank() != 0:
        return None
    path = Path(run_dir) / RUN_LOG
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.INFO)
    logging.getLogger().addHandler(handler)
    return path


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


def set_aside_record(path: Path) -> Path | None:
    """Rename an existing record out of the way of a fresh start (nothing is deleted)."""
    if not path.is_file() or path.stat().st_size == 0:
        return None
    aside = path.with_name(f"{path.name}.before-{time.strftime('%Y%m%d-%H%M%S')}")
    os.replace(path, aside)
    return aside


class MetricsLogger:
    """Writes one JSON object per step to `metrics.jsonl` (rank 0, every step); mirrors every
    `log_every`-th step to wandb (when enabled) and to a console line."""

    CONSOLE_KEYS = ("loss/total", "loss/sft", "reward/task_mean", "disc/score_mean", "optim/grad_norm",
                    "time/step_s")

    def __init__(self, run_dir: str | Path, wandb: dict | None = None, config: dict | None = None,
                 resume_step: int | None = None, log_every: int = 1, last_step: int | None = None):
        self.enabled = rank() == 0
        self.path = Path(run_dir) / "metrics.jsonl"
        self.log_every = log_every
        self.last_step = last_step
        self._wandb = None
        if not self.enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step == 0:
            aside = set_aside_record(self.path)
            if aside is not None:
                logger.warning("starting at step 0, but %s already held a record of steps: kept as %s",
                               self.path, aside.name)
        elif resume_step is not None:
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
        if step % self.log_every and step != self.last_step:
            return
        if self._wandb is not None:
            self._wandb.log({k: v for k, v in row.items() if isinstance(v, (int, float))}, step=step)
        shown = " ".join(f"{k}={row[k]:.4g}" for k in self.CONSOLE_KEYS if isinstance(row.get(k), (int, float)))
        logger.info("step %d: %s", step, shown)

    def close(self) -> None:
        if not self.enabled:
            return
        self._file.close()
        if self._wandb is not None:
            self._wandb.finish()


def read_record(run_dir: str | Path) -> list[dict]:
    """The rows of `<run_dir>/metrics.jsonl` (a partial last line is skipped)."""
    path = Path(run_dir) / "metrics.jsonl"
    rows = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict) and isinstance(row.get("step"), int):
                rows.append(row)
    return rows


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
