"""Atomic file writes and the records that make a data set traceable.

Every file of the data pipeline is written whole to a temporary name beside its target, fsynced
and renamed into place, so an interrupted run leaves the old file or the new one, never half of
one. Next to its outputs each step writes a manifest (JSON): what it read (paths and sha256),
its settings and seeds, and its counts; the last step folds the earlier manifests into one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any, Iterable

FORMAT_VERSION = 1
"""Version of the manifest layout."""


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_text_atomic(path: Path, content: str) -> None:
    """Replace `path` with `content` in one rename (parent folders are created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def replace_dir_atomic(stage: Path, final: Path, aside: str) -> None:
    """Publish the finished directory `stage` as `final` by rename. An existing `final` is first
    renamed to `<final>.<aside>-<hex>` and deleted after, so `final` is always a whole directory."""
    stage, final = Path(stage), Path(final)
    if not final.exists():
        os.replace(stage, final)
        return
    old = final.parent / f"{final.name}.{aside}-{uuid.uuid4().hex[:12]}"
    os.replace(final, old)
    os.replace(stage, final)
    shutil.rmtree(old, ignore_errors=True)


def write_jsonl_atomic(path: Path, records: Iterable[dict]) -> int:
    """Write one JSON object per line atomically; returns the number of records."""
    lines = [json.dumps(r, ensure_ascii=False) + "\n" for r in records]
    write_text_atomic(path, "".join(lines))
    return len(lines)


def write_json_atomic(path: Path, value: Any) -> None:
    write_text_atomic(path, json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False) + "\n")


def read_json(path: Path) -> Any | None:
    """A JSON file's value, or None when the file does not exist."""
    path = Path(path)
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def file_entry(path: Path, records: int | None = None) -> dict:
    """`{"path", "sha256"[, "records"]}` of a written or read file."""
    entry: dict[str, Any] = {"path": str(path), "sha256": sha256_file(path)}
    if records is not None:
        entry["records"] = records
    return entry


def manifest_path(data_file: Path) -> Path:
    """The manifest beside a data file: `prompts.jsonl` -> `prompts.jsonl.manifest.json`."""
    return Path(data_file).with_name(Path(data_file).name + ".manifest.json")


def run_record_path(demos_file: Path) -> Path:
    """Where teacher generation records its runs: `demos.jsonl` -> `demos.jsonl.runs.json`."""
    return Path(demos_file).with_name(Path(demos_file).name + ".runs.json")


def append_run_record(demos_file: Path, record: dict) -> None:
    """Add one invocation's settings and counts to the run log beside a demonstrations file (a
    resumed generation appends a second record; the split reports them all)."""
    path = run_record_path(demos_file)
    runs = read_json(path) or []
    runs.append(record)
    write_json_atomic(path, runs)
