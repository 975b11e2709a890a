"""Typed conversion between plain YAML data and the run configuration's dataclasses.

A recipe is YAML; the run sees dataclasses. Everything between the two is here, generic over any
dataclass, so that each section keeps only its fields, docstrings and semantic checks:

- `build(cls, data, origins)`: dict -> dataclass, field by field against the type hints. Unknown
  keys name the closest valid key (difflib); a value of the wrong type names the key path and
  where that value came from (the recipe file that set it, or the command-line override).
- `to_data(obj)`: dataclass -> plain data (enums to values, tuples to lists) for YAML.
- `merge(base, top)`: recursive dict merge (a recipe names only what differs from its base; a
  list is replaced whole, never merged element-wise).
- `parse_override("a.b=1")` / `set_path`: command-line overrides `section.field=value`, with the
  value read as YAML (so `true`, `3`, `[0.9, 0.95]`, `null` are typed) and list indices allowed
  (`objective.stages.0.steps=50`).
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import types
import typing
from typing import Any, Literal, Union

import yaml


class ConfigError(ValueError):
    """A recipe or override that cannot become a valid configuration; the message says where."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe YAML loader that refuses a key given twice in one mapping (PyYAML keeps the last)."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice (first on line {seen[key] + 1})", key_node.start_mark
                )
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep)


def load_yaml(text: str):
    """Parse YAML text safely; a key repeated within one mapping is an error."""
    return yaml.load(text, Loader=_UniqueKeyLoader)


def closest(name: str, candidates: list[str]) -> str:
    """' (did you mean X?)' for the closest candidate, or '' when none is close."""
    match = difflib.get_close_matches(name, candidates, n=1, cutoff=0.5)
    return f"; did you mean {match[0]!r}?" if match else ""


def origin_of(path: str, origins: dict[str, str]) -> str:
    """The source that set `path` (or its closest set ancestor), e.g. 'recipes/x.yaml'."""
    probe = path
    while probe:
        if probe in origins:
            return origins[probe]
        probe = probe.rpartition(".")[0]
    return origins.get("", "defaults")


def _fail(path: str, origins: dict[str, str], message: str) -> ConfigError:
    return ConfigError(f"{origin_of(path, origins)}: {path}: {message}")


def _describe(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"


def convert(value: Any, hint: Any, path: str, origins: dict[str, str]) -> Any:
    """`value` (plain YAML data) as an instance of type `hint`; ConfigError naming `path` otherwise."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None:
            if type(None) in args:
                return None
            raise _fail(path, origins, "must not be null")
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:
            return convert(value, options[0], path, origins)
        errors = []
        for arg in options:
            try:
                return convert(value, arg, path, origins)
            except ConfigError as err:
                errors.append(str(err).rpartition(": ")[2])
        raise _fail(path, origins, " or ".join(errors))
    if value is None:
        raise _fail(path, origins, f"must not be null (expected {getattr(hint, '__name__', hint)})")
    if origin is Literal:
        if value not in args:
            choices = ", ".join(repr(a) for a in args)
            suggestion = closest(str(value), [str(a) for a in args])
            raise _fail(path, origins, f"{value!r} is not one of {choices}{suggestion}")
        return value
    if dataclasses.is_dataclass(hint):
        if isinstance(value, hint):
            return value
        return build(hint, value, origins, path)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        try:
            return hint(value)
        except ValueError:
            choices = [m.value for m in hint]
            raise _fail(path, origins, f"{value!r} is not one of {choices}{closest(str(value), choices)}") from None
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise _fail(path, origins, f"expected a list, got {_describe(value)}")
        return [convert(v, args[0] if args else Any, f"{path}.{i}", origins) for i, v in enumerate(value)]
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise _fail(path, origins, f"expected a list of {len(args)} values, got {_describe(value)}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(convert(v, args[0], f"{path}.{i}", origins) for i, v in enumerate(value))
        if len(value) != len(args):
            raise _fail(path, origins, f"expected {len(args)} values, got {len(value)}")
        return tuple(convert(v, a, f"{path}.{i}", origins) for i, (v, a) in enumerate(zip(value, args)))
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise _fail(path, origins, f"expected a mapping, got {_describe(value)}")
        return dict(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise _fail(path, origins, f"expected true or false, got {_describe(value)}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _fail(path, origins, f"expected an integer, got {_describe(value)}")
        return value
    if hint is float:
        if isinstance(value, bool):
            raise _fail(path, origins, f"expected a number, got {_describe(value)}")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            # YAML 1.1 reads "1e-5" (no dot) as a string; accept it where a number is expected.
            try:
                return float(value)
            except ValueError:
                pass
        raise _fail(path, origins, f"expected a number, got {_describe(value)}")
    if hint is str:
        if not isinstance(value, str):
            raise _fail(path, origins, f"expected a string, got {_describe(value)}")
        return value
    raise _fail(path, origins, f"unsupported field type {hint!r}")


def build(cls: type, data: Any, origins: dict[str, str] | None = None, path: str = "") -> Any:
    """An instance of dataclass `cls` from mapping `data`; missing keys take their defaults."""
    origins = origins or {}
    where = path or "the top level"
    if not isinstance(data, dict):
        raise _fail(path or "(top)", origins, f"expected a mapping of {cls.__name__} fields, got {_describe(data)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for key, value in data.items():
        sub = f"{path}.{key}" if path else str(key)
        if key not in fields:
            raise _fail(sub, origins, f"unknown key {key!r} in {where}{closest(str(key), sorted(fields))} "
                                      f"(valid: {', '.join(sorted(fields))})")
        kwargs[key] = convert(value, hints[key], sub, origins)
    for name, f in fields.items():
        if name not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            sub = f"{path}.{name}" if path else name
            raise _fail(sub, origins, f"required key {name!r} of {where} is missing")
    return cls(**kwargs)


def to_data(obj: Any) -> Any:
    """Plain YAML-ready data from a dataclass tree (enums as values, tuples as lists)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_data(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.init}
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, (list, tuple)):
        return [to_data(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_data(v) for k, v in obj.items()}
    return obj


def merge(base: dict, top: dict, source: str, origins: dict[str, str], path: str = "") -> dict:
    """`top` laid over `base` (recursively for mappings); records `source` for each key set."""
    out = dict(base)
    for key, value in top.items():
        sub = f"{path}.{key}" if path else str(key)
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value, source, origins, sub)
        else:
            out[key] = value
            for stale in [p for p in origins if p.startswith(sub + ".")]:
                del origins[stale]
            origins[sub] = source
    return out


def parse_override(text: str) -> tuple[list[str], Any]:
    """'a.b.c=value' -> (['a', 'b', 'c'], value read as YAML); ConfigError when malformed."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r}: expected section.field=value, e.g. optimizer.lr=1e-6")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"override {text!r}: the value is not valid YAML ({err})") from err
    return key.split("."), value


def set_path(data: dict, keys: list[str], value: Any, source: str, origins: dict[str, str]) -> None:
    """Set `data[k0][k1]...` to `value`, creating mappings and indexing lists by number."""
    node: Any = data
    for depth, key in enumerate(keys[:-1]):
        node = _child(node, key, keys[: depth + 1], source)
    last = keys[-1]
    if isinstance(node, list):
        index = _index(node, last, keys, source)
        node[index] = value
    else:
        node[last] = value
    path = ".".join(keys)
    for stale in [p for p in origins if p.startswith(path + ".")]:
        del origins[stale]
    origins[path] = source


def _index(node: list, key: str, keys: list[str], source: str) -> int:
    if not key.isdigit() or int(key) >= len(node):
        raise ConfigError(f"{source}: {'.'.join(keys)}: {key!r} is not an index of a list of {len(node)}")
    return int(key)


def _child(node: Any, key: str, keys: list[str], source: str) -> Any:
    if isinstance(node, list):
        return node[_index(node, key, keys, source)]
    if not isinstance(node, dict):
        raise ConfigError(f"{source}: {'.'.join(keys[:-1])} is {_describe(node)}, not a section")
    child = node.get(key)
    if child is None:
        child = node[key] = {}
    elif isinstance(child, list):
        child = node[key] = list(child)  # copy: a base recipe's list must not change under it
    elif isinstance(child, dict):
        child = node[key] = dict(child)
    return child
