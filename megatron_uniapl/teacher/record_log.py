"""Append-only JSONL files that survive interruption: recover, list the done keys, append per batch.

Teacher generation over a large prompt set runs for hours and gets preempted. Its outputs are
therefore appended a batch at a time, flushed and fsynced, each record carrying the key of its
prompt; a restart reads the keys already present and skips them. A crash can leave at most a
partial last line (a write cut short): it has no trailing newline, so it is recognised
unambiguously and cut off before anything is appended. Any other malformed line is not the
tool's own crash residue and stops the run with its file:line.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from megatron_uniapl.data.jsonl import DataError, decode_line, loads_line

logger = logging.getLogger(__name__)


def drop_partial_last_line(path: Path) -> int:
    """Truncate `path` after its last newline; return the number of bytes dropped (0 if none)."""
    if not path.is_file():
        return 0
    size = path.stat().st_size
    if size == 0:
        return 0
    with path.open("rb+") as f:
        # Read backwards in blocks until a newline is found (the last line is rarely long).
        end, block = size, 1 << 16
        while end > 0:
            start = max(0, end - block)
            f.seek(start)
            chunk = f.read(end - start)
            newline = chunk.rfind(b"\n")
            if newline >= 0:
                keep = start + newline + 1
                break
            end = start
        else:
            keep = 0
        if keep == size:
            return 0
        f.truncate(keep)
    dropped = size - keep
    logger.warning("%s: dropped a partial last line (%d bytes) left by an interrupted run", path, dropped)
    return dropped


def read_keys(path: Path, field: str) -> dict[str, dict[str, Any]]:
    """Records of an append-only file by their `field` value (a string); DataError on a record
    without it or with a repeated one.

    A partial last line is ignored rather than read, so that ranks other than the writer can
    read the file while the writer is cutting that line off."""
    records: dict[str, dict[str, Any]] = {}
    if not path.is_file():
        return records
    lines = path.read_bytes().split(b"\n")
    for number, raw in enumerate(lines[:-1], start=1):  # lines[-1]: after the last newline
        where = f"{path}:{number}"
        line = decode_line(raw, where)
        if not line.strip():
            continue
        record = loads_line(line, where)
        key = record.get(field) if isinstance(record, dict) else None
        if not isinstance(key, str):
            raise DataError(
                f"{where}: {field}: missing or not a string; was this file written by "
                "generate_demos? (it resumes by these keys)"
            )
        if key in records:
            raise DataError(f"{where}: {field}: {key!r} appears twice")
        records[key] = record
    return records


class AppendLog:
    """An append-only JSONL file written a batch at a time, durable after each `append`."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = path.open("a", encoding="utf-8")

    def append(self, records: list[dict[str, Any]]) -> None:
        if not records:
            return
        self._file.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()
