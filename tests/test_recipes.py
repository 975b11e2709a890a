"""Every shipped recipe loads and validates, GPU layouts fit by the memory model, the tiny recipe's
resolved configuration is frozen, and every paper variant has a recipe and a documented override."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import torch

from megatron_uniapl.config import RunConfig, dump_config, load_config, save_resolved
from megatron_uniapl.config.model import ModelOptions
from megatron_uniapl.config.variants import VARIANTS
from megatron_uniapl.planning.memory import GiB
from megatron_uniapl.planning.plan import current_block, memory_comment, memory_for

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes"
ALL = sorted(p for p in RECIPES.rglob("*.yaml") if "data" not in p.parts)
GPU = sorted(RECIPES.glob("qwen3_*.yaml")) + sorted((RECIPES / "variants").glob("*.yaml"))
FROZEN = ROOT / "tests" / "data" / "tiny_cpu_resolved.yaml"


@pytest.fixture(autouse=True)
def cluster_paths(monkeypatch):
    for name in ("UNIAPL_MODELS", "UNIAPL_DATA", "UNIAPL_RUNS"):
        monkeypatch.setenv(name, f"/cluster/{name.lower()}")


def test_recipe_set_is_complete():
    names = {p.relative_to(RECIPES).as_posix() for p in ALL}
    for size in ("0p6b", "1p7b", "4b", "8b", "14b", "32b"):
        assert f"qwen3_{size}.yaml" in names
    assert "tiny_cpu.yaml" in names and len(GPU) == 6 + len(VARIANTS)


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.relative_to(RECIPES).as_posix())
def test_recipe_loads_and_validates(path, tmp_path):
    if path.name.endswith("_base.yaml"):
        load_config(path, validate=False)  # a base is not a run (no model): types and keys only
        return
    config = load_config(path)
    assert isinstance(config, RunConfig)
    assert config.objective_config().stages
    # The resolved form of a recipe is a complete recipe that loads to the same configuration.
    assert load_config(save_resolved(config, tmp_path)) == config


@pytest.mark.parametrize("path", GPU, ids=lambda p: p.relative_to(RECIPES).as_posix())
def test_gpu_layout_fits(path):
    config = load_config(path)
    layout, mem = memory_for(config)
    assert layout.world == config.plan.world
    assert mem.peak <= config.plan.gpu_memory_gib * GiB, "\n".join(mem.lines())
    assert config.model.dtype == "bfloat16"
    assert config.rollout.engine.distributed_executor_backend == "external_launcher"
    # The engine's weights leave most of its share to the KV cache.
    assert mem.vllm - mem.vllm_weights >= 0.5 * mem.vllm, "\n".join(mem.lines())
    # The engine/trainer pairing and the model's heads fit at the planned world (the checks a
    # launch runs before anything starts).
    from megatron_uniapl.planning.plan import arch_for

    arch = arch_for(config)
    assert config.check_world(config.plan.world) >= 1
    config.check_arch(arch.num_attention_heads, arch.num_key_value_heads, arch.num_layers)
    assert config.train.micro_batch_tokens % config.model.token_multiple == 0


@pytest.mark.parametrize("path", sorted(RECIPES.glob("qwen3_*.yaml")), ids=lambda p: p.name)
def test_size_recipe_memory_plan_is_current(path):
    block = current_block(path.read_text())
    assert block, f"{path} has no memory plan block"
    assert block == memory_comment(load_config(path)), (
        f"{path}: stale memory plan; run python -m megatron_uniapl.planning.plan --write {path}")


def test_tiny_recipe_resolved_config_is_frozen():
    resolved = dump_config(load_config(RECIPES / "tiny_cpu.yaml"))
    assert resolved == FROZEN.read_text(), (
        "the resolved tiny recipe changed (a default or the recipe); if intended, regenerate with\n"
        "  python -m megatron_uniapl.config --config recipes/tiny_cpu.yaml > tests/data/tiny_cpu_resolved.yaml"
    )


def test_tiny_recipe_runs_on_cpu():
    config = load_config(RECIPES / "tiny_cpu.yaml")
    assert isinstance(config.model, ModelOptions)  # passed as is to build_qwen3_model
    config.model.validate()
    assert config.model.torch_dtype == torch.float32
    assert config.model.create_tiny and config.model.dtype == "float32" and config.model.spec == "portable"
    assert config.rollout.engine.kv_cache_memory_bytes and config.logging.wandb_mode == "disabled"
    assert (ROOT / config.data.demo_file).is_file() and (ROOT / config.data.rl_prompt_file).is_file()


def test_every_variant_has_a_recipe():
    found = {load_config(p).objective.variant for p in (RECIPES / "variants").glob("*.yaml")}
    assert found == set(VARIANTS)


def readme_overrides() -> dict[str, list[str]]:
    text = (RECIPES / "README.md").read_text()
    return {m.group(1): shlex.split(m.group(2)) for m in re.finditer(r"^\s*OVERRIDE (\S+):\s+(.*)$", text, re.MULTILINE)}


def test_every_variant_has_a_documented_one_line_override():
    overrides = readme_overrides()
    assert set(overrides) == set(VARIANTS)
    for variant, args in overrides.items():
        config = load_config(RECIPES / "tiny_cpu.yaml", args)
        objective = config.objective_config()
        assert objective.variant == variant
        if not any(s.uses_discriminator for s in objective.stages):
            assert config.discriminator.kind == "none", f"{variant}: drop the unused discriminator"
