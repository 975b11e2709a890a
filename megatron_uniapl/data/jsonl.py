"""Reading JSONL files record by record with errors that say `file:line: field: problem`.

Training data is assembled by hand and by scripts, and one bad record deep in a large file
should stop the run at load time with a message that leads straight to it, not fail hours
later inside a worker. Every reader in `data.schemas` goes through `read_jsonl`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

T = TypeVar("T")


class DataError(ValueError):
    """A record in a data file is malformed; the message starts with `file:line:`."""


def loads_line(line: str, where: str) -> Any:
    """One JSON value; DataError naming `where` (file:line) when the line is not JSON."""
    try:
        return json.loads(line)
    except json.JSONDecodeError as e:
        raise DataError(f"{where}: invalid JSON: {e.msg} at column {e.colno}") from None


def decode_line(raw: bytes, where: str) -> str:
    """One line as text; DataError naming `where` and the column when it is not UTF-8."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{where}: not UTF-8 text (byte 0x{raw[e.start]:02x} at column {e.start + 1}); "
                        f"JSONL files must be UTF-8") from None


def iter_jsonl(path: str | Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield `(where, record)` per non-blank line, `where` being `path:line`.

    Raises DataError for a line that is not JSON or not a JSON object.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    with path.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            where = f"{path}:{number}"
            line = decode_line(raw, where)
            if not line.strip():
                continue
            record = loads_line(line, where)
            if not isinstance(record, dict):
                raise DataError(f"{where}: expected a JSON object, got {type(record).__name__}")
            yield where, record


def read_jsonl(path: str | Path, parse: Callable[[dict[str, Any], str], T],
               allow_empty: bool = False) -> list[T]:
    """Parse every record of `path` with `parse(record, where)`; an empty file is an error
    unless `allow_empty` (an empty training set is almost always a wrong path or filter)."""
    records = [parse(record, where) for where, record in iter_jsonl(path)]
    if not records and not allow_empty:
        raise DataError(f"{path}: no records")
    return records


def check_fields(record: dict[str, Any], where: str, required: tuple[str, ...],
                 optional: tuple[str, ...] = ()) -> None:
    """Raise DataError for a missing required field or a field the schema does not know
    (a misspelt optional field would otherwise be silently ignored)."""
    for name in required:
        if name not in record:
            raise DataError(f"{where}: {name}: missing (required fields: {', '.join(required)})")
    unknown = sorted(set(record) - set(required) - set(optional))
    if unknown:
        raise DataError(f"{where}: {unknown[0]}: unknown field (known fields: "
                        f"{', '.join(required + optional)})")


def expect_str(record: dict[str, Any], name: str, where: str, allow_blank: bool = False) -> str:
    """The field `name` as a string (non-blank unless `allow_blank`)."""
    value = record[name]
    if not isinstance(value, str):
        raise DataError(f"{where}: {name}: expected a string, got {type(value).__name__}")
    if not allow_blank and not value.strip():
        raise DataError(f"{where}: {name}: must not be blank")
    return value
