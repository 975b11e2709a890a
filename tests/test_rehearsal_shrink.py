"""The recipe rehearsal changes only the fields it declares, and keeps every shipped layout
(reducing, with a stated reason, only what needs more than the allowed ranks)."""

from __future__ import annotations

from pathlib import Path

import pytest

from megatron_uniapl.config import load_config
from megatron_uniapl.rehearsal import shrink

ROOT = Path(__file__).resolve().parents[1]
SIZES = sorted((ROOT / "recipes").glob("qwen3_*.yaml"))
VARIANTS = sorted((ROOT / "recipes" / "variants").glob("*.yaml"))

# The test's own copy of the list: adding a field to the rehearsal's list must be done here too.
EXPECTED = {
    "model.hf_dir", "model.init_checkpoint", "model.tokenizer", "model.tensor_parallel", "model.pipeline_parallel",
    "model.virtual_pipeline_stages", "model.sequence_parallel", "model.spec", "model.fp8", "model.dtype",
    "objective.first_stage_steps", "rollout.group_size", "rollout.sampling.max_tokens", "rollout.engine.max_model_len",
    "rollout.engine.tensor_parallel_size", "rollout.engine.enable_sleep_mode", "rollout.engine.kv_cache_memory_bytes",
    "rollout.engine.enforce_eager", "rollout.engine.dtype", "rollout.verify_every", "discriminator.frozen.path",
    "discriminator.frozen.device", "discriminator.cotrained_init", "reward.num_workers", "data.demo_file",
    "data.rl_prompt_file", "data.prompts_per_step", "data.demos_per_step", "data.max_prompt_tokens",
    "data.max_response_tokens", "train.device", "train.steps", "train.micro_batch_tokens", "checkpoint.every", "checkpoint.dir",
    "checkpoint.resume", "logging.run_dir", "logging.wandb_mode", "logging.progress_bar", "logging.log_every",
}


@pytest.fixture(autouse=True)
def cluster_paths(monkeypatch):
    for name in ("UNIAPL_MODELS", "UNIAPL_DATA", "UNIAPL_RUNS"):
        monkeypatch.setenv(name, f"/cluster/{name.lower()}")


def plan(path, overrides=(), max_ranks=4, float32=False):
    return shrink.shrink(load_config(path, list(overrides)), "/out/run", model_dir="/out/policy",
                         classifier_dir="/out/classifier", data_dir="/repo/recipes/data", max_ranks=max_ranks,
                         float32=float32)


def test_the_list_of_shrinkable_fields_is_the_reviewed_one():
    assert set(shrink.SHRINKABLE) == EXPECTED
    assert set(shrink.FULL_SIZE_SHRINKABLE) <= EXPECTED


@pytest.mark.parametrize("path", SIZES + VARIANTS, ids=lambda p: p.name)
@pytest.mark.parametrize("float32", [False, True])
def test_only_declared_fields_change(path, float32):
    result = plan(path, float32=float32)
    changed = {c.path for c in result.changes}
    assert changed <= set(shrink.SHRINKABLE), sorted(changed - set(shrink.SHRINKABLE))
    assert ("model.dtype" in changed) == float32  # the recipes are bf16; only --float32 changes that
    config, recipe = result.config, load_config(path)
    assert config.objective.variant == recipe.objective.variant and config.objective.pg == recipe.objective.pg
    assert (config.objective.mu, config.objective.lambda_adv) == (recipe.objective.mu, recipe.objective.lambda_adv)
    assert config.optimizer == recipe.optimizer
    assert config.discriminator.kind == recipe.discriminator.kind and config.reward.mode == recipe.reward.mode
    assert config.optimizer.use_distributed_optimizer == recipe.optimizer.use_distributed_optimizer
    assert config.rollout.engine.distributed_executor_backend == "external_launcher"
    assert result.world <= 4 and config.check_world(result.world) >= 1


def test_the_main_jobs_layout_is_kept_as_it_is():
    result = plan(ROOT / "recipes" / "qwen3_4b.yaml")
    m = result.config.model
    assert (m.tensor_parallel, m.pipeline_parallel, m.sequence_parallel, m.dtype) == (2, 1, True, "bfloat16")
    assert result.world == 4 and result.config.check_world(4) == 2  # DP 8 -> 2, stated
    assert result.reductions == ["data parallelism 4 -> 2: two data-parallel ranks exercise every data-parallel path"]
    assert result.config.rollout.engine.tensor_parallel_size == 1
    assert result.config.train.micro_batch_tokens % m.token_multiple == 0


def test_wide_layouts_are_reduced_with_reasons():
    big = plan(ROOT / "recipes" / "qwen3_32b.yaml")  # TP 8 x DP 4, engine TP 4
    assert big.config.model.tensor_parallel == 2 and big.world == 4
    assert big.config.rollout.engine.tensor_parallel_size == 4  # one engine over all 4 ranks: kept
    assert [n.split(":")[0] for n in big.reductions] == [
        "data parallelism 4 -> 2", "tensor parallelism -> 4", "tensor parallelism -> 2"]
    pipeline = plan(ROOT / "recipes" / "qwen3_8b.yaml", ["model.pipeline_parallel=2"])  # TP 4 x PP 2 x DP 1
    assert (pipeline.config.model.tensor_parallel, pipeline.config.model.pipeline_parallel, pipeline.world) == (2, 2, 4)
    two = plan(ROOT / "recipes" / "qwen3_0p6b.yaml", max_ranks=2)
    assert two.world == 2 and two.config.check_world(2) == 2


def test_reduce_layout_order():
    assert shrink.reduce_layout(2, 1, 4, 4)[:3] == (2, 1, 2)
    assert shrink.reduce_layout(8, 1, 4, 4)[:3] == (2, 1, 2)
    assert shrink.reduce_layout(2, 2, 2, 4)[:3] == (2, 2, 1)
    assert shrink.reduce_layout(1, 4, 1, 2)[:3] == (1, 2, 1)
    assert shrink.reduce_layout(1, 1, 1, 4) == (1, 1, 1, [])


def test_full_size_changes_only_length_and_output():
    recipe = load_config(ROOT / "recipes" / "qwen3_4b.yaml")
    result = shrink.full_size(recipe, "/out/run", 8)
    assert {c.path for c in result.changes} <= set(shrink.FULL_SIZE_SHRINKABLE)
    assert result.config.model == recipe.model and result.config.data == recipe.data
