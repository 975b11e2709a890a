"""The run configuration: recipes on disk -> a validated `RunConfig`, and back to disk.

The sections (one dataclass each, one docstring per field) are in `config.sections`; the
package re-exports them, so `from megatron_uniapl.config import RunConfig, load_config` is the API.

A recipe is a YAML mapping of sections. `base: other.yaml` (relative to the recipe's folder)
makes it inherit another recipe, so a variant names only what differs; chains are allowed,
cycles are refused. Command-line overrides `section.field=value` are applied last. String values
may use `${VAR}` for environment variables (cluster paths); an unset variable is an error.

    config = load_config("recipes/tiny_cpu.yaml", ["optimizer.lr=1e-4"])
    save_resolved(config, config.logging.run_dir)   # -> <run_dir>/resolved_config.yaml

The resolved file is itself a complete recipe: loading it gives the same configuration.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml

from megatron_uniapl.config.sections import (
    RunConfig,
)
from megatron_uniapl.config.yaml_io import (
    ConfigError,
    build,
    load_yaml,
    merge,
    origin_of,
    parse_override,
    set_path,
    to_data,
)

RESOLVED_NAME = "resolved_config.yaml"
"""File name of the resolved configuration inside the run directory."""

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def read_recipe(path: str | Path, origins: dict[str, str], _seen: tuple[Path, ...] = ()) -> dict:
    """The recipe at `path` merged over its `base:` chain; records which file set each key."""
    path = Path(path)
    resolved = path.resolve()
    if resolved in _seen:
        chain = " -> ".join(str(p) for p in (*_seen, resolved))
        raise ConfigError(f"{path}: base: recipes inherit in a cycle ({chain})")
    if not path.is_file():
        raise ConfigError(f"{path}: recipe file not found")
    try:
        data = load_yaml(path.read_text()) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f", line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{line}: not valid YAML ({getattr(err, 'problem', err)})") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a recipe must be a mapping of sections, got {type(data).__name__}")
    base = data.pop("base", None)
    merged: dict = {}
    if base is not None:
        if not isinstance(base, str):
            raise ConfigError(f"{path}: base: expected a recipe path, got {base!r}")
        merged = read_recipe(path.parent / base, origins, (*_seen, resolved))
    return merge(merged, data, str(path), origins)


def expand_env(value: Any, path: str, origins: dict[str, str]) -> Any:
    """`value` with `${VAR}` replaced by the environment in every string, recursively."""
    if isinstance(value, str):
        def sub(match: re.Match) -> str:
            name = match.group(1)
            if name not in os.environ:
                raise ConfigError(f"{origin_of(path, origins)}: {path}: environment variable {name} is not set")
            return os.environ[name]

        return _ENV.sub(sub, value)
    if isinstance(value, dict):
        return {k: expand_env(v, f"{path}.{k}" if path else k, origins) for k, v in value.items()}
    if isinstance(value, list):
        return [expand_env(v, f"{path}.{i}", origins) for i, v in enumerate(value)]
    return value


def resolve_data(recipe: str | Path | None, overrides: list[str] = ()) -> tuple[dict, dict[str, str]]:
    """The merged plain data of a recipe plus overrides, and the source of each key."""
    origins: dict[str, str] = {}
    data = read_recipe(recipe, origins) if recipe is not None else {}
    for text in overrides:
        keys, value = parse_override(text)
        set_path(data, keys, value, f"override {text!r}", origins)
    return expand_env(data, "", origins), origins


def load_config(recipe: str | Path | None, overrides: list[str] = (), validate: bool = True) -> RunConfig:
    """The `RunConfig` of `recipe` (None = defaults only) with `overrides`, validated."""
    data, origins = resolve_data(recipe, overrides)
    config = build(RunConfig, data, origins)
    if validate:
        config.validate()
    return config


def dump_config(config: RunConfig) -> str:
    """The configuration as YAML, every field written out (a complete recipe)."""
    header = "# Resolved configuration (every field). Load it as a recipe to rerun this run.\n"
    return header + yaml.safe_dump(to_data(config), sort_keys=False, default_flow_style=False, width=100)


def save_resolved(config: RunConfig, run_dir: str | Path) -> Path:
    """Write `<run_dir>/resolved_config.yaml` (atomically) and return its path."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    target = run_dir / RESOLVED_NAME
    tmp = run_dir / f".{RESOLVED_NAME}.tmp"
    tmp.write_text(dump_config(config))
    os.replace(tmp, target)
    return target


def parse_args(argv: list[str] | None = None, description: str = "megatron_uniapl run"):
    """`--config RECIPE [section.field=value ...]` -> (recipe path or None, overrides)."""
    import argparse

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", default=None, help="recipe YAML (recipes/*.yaml)")
    parser.add_argument("overrides", nargs="*", help="section.field=value, applied after the recipe")
    args = parser.parse_args(argv)
    return args.config, list(args.overrides)


def main(argv: list[str] | None = None) -> int:
    """Print the resolved, validated configuration of a recipe plus overrides (a dry run)."""
    recipe, overrides = parse_args(argv, "print the resolved configuration of a recipe")
    try:
        config = load_config(recipe, overrides)
    except ConfigError as err:
        print(f"error: {err}")
        return 2
    print(dump_config(config), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
