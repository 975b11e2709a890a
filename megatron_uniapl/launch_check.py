"""Checks a launcher runs before it takes a cluster's GPUs: the recipe resolves and every path exists.

A job that fails after minutes in the queue and the start-up of many ranks because a dataset path
has a typo wastes the allocation; the Slurm scripts run this first, in one process, and stop with
every problem listed at once:

    python -m megatron_uniapl.launch_check --world 16 --config recipes/qwen3_4b.yaml [overrides...]

Exit status 0 when the run can start, 2 with one `error:` line per problem otherwise.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from megatron_uniapl.config import ConfigError, RunConfig, load_config
from megatron_uniapl.config.sections import check_model_layout, read_model_config


def path_problems(config: RunConfig) -> list[str]:
    """One message per missing or unusable path of `config` (empty when all is well)."""
    problems = []
    m = config.model
    if m.hf_dir and not (Path(m.hf_dir) / "config.json").is_file() and not m.create_tiny:
        problems.append(f"model.hf_dir={m.hf_dir}: no config.json there (a Hugging Face Qwen3 directory is expected)")
    if m.tokenizer and not Path(m.tokenizer).is_dir():
        problems.append(f"model.tokenizer={m.tokenizer}: not a directory")
    if m.init_checkpoint and not Path(m.init_checkpoint).is_dir():
        problems.append(f"model.init_checkpoint={m.init_checkpoint}: not a directory (import one with tools/convert_hf.py)")
    for name in ("demo_file", "rl_prompt_file"):
        value = getattr(config.data, name)
        if value and not Path(value).is_file():
            problems.append(f"data.{name}={value}: no such file")
    d = config.discriminator
    if d.kind == "frozen" and d.frozen is not None and not Path(d.frozen.path).is_dir():
        problems.append(f"discriminator.frozen.path={d.frozen.path}: not a directory")
    if d.kind == "cotrained" and d.cotrained_init and not Path(d.cotrained_init).is_dir():
        problems.append(f"discriminator.cotrained_init={d.cotrained_init}: not a directory")
    resume = config.checkpoint.resume
    if resume not in ("auto", "none") and not Path(resume).exists():
        problems.append(f"checkpoint.resume={resume}: no such checkpoint (use auto, none or an existing path)")
    run_dir = Path(config.logging.run_dir)
    probe = next((p for p in (run_dir, *run_dir.parents) if p.exists()), None)
    if probe is None or not os.access(probe, os.W_OK):
        problems.append(f"logging.run_dir={run_dir}: cannot be created ({probe} is not writable)")
    return problems


def check(recipe: str, overrides: list[str], world: int | None) -> list[str]:
    """All problems that would stop the run with this recipe on `world` ranks.

    Each override is tried on its own first, so that two typos give two messages; the rest of the
    checks (validation, the world size, paths) run on the recipe with the usable overrides."""
    if not Path(recipe).is_file():
        return [f"recipe {recipe}: no such file (paths are relative to the repository root)"]
    try:
        load_config(recipe, [], validate=False)
    except ConfigError as err:  # the recipe itself cannot be read: nothing else can be checked
        return [str(err)]
    problems, usable = [], []
    for override in overrides:
        try:
            load_config(recipe, [override], validate=False)
            usable.append(override)
        except ConfigError as err:
            problems.append(str(err))
    try:
        config = load_config(recipe, usable, validate=False)
    except ConfigError as err:  # overrides fine alone but not together (e.g. a list index)
        return [*problems, str(err)]
    # check_world includes the model's shape; without a world size, the shape alone.
    for step in (config.validate, lambda: config.check_world(world) if world is not None else _layout_fits_model(config)):
        try:
            step()
        except (ConfigError, ValueError) as err:  # ValueError: a config.json that is no Qwen3
            problems.append(str(err))
    return problems + path_problems(config)


def _layout_fits_model(config: RunConfig) -> None:
    """The trainer's and the engines' layouts against the model's heads and layers, when the
    model's config.json is reachable (ConfigError naming the field otherwise)."""
    hf_config = read_model_config(config.model.hf_dir)
    if hf_config is not None:
        check_model_layout(config, hf_config, f"{config.model.hf_dir}/config.json")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="check a recipe and its paths before launching")
    parser.add_argument("--config", required=True, help="recipe YAML")
    parser.add_argument("--world", type=int, default=None, help="total ranks the job will start")
    parser.add_argument("overrides", nargs="*", help="section.field=value")
    args = parser.parse_args(argv)
    problems = check(args.config, args.overrides, args.world)
    for problem in problems:
        print(f"error: {problem}")
    return 2 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
