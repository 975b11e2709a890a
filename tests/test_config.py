"""The run configuration: typed loading, inheritance, overrides, validation messages, round trip."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from megatron_uniapl.config import (
    RESOLVED_NAME,
    ConfigError,
    RunConfig,
    dump_config,
    load_config,
    main,
    save_resolved,
)
from megatron_uniapl.config.reward import RewardMode
from megatron_uniapl.config.schedule import MuSchedule

MINIMAL = """
model: {hf_dir: /models/qwen3}
data: {demo_file: demos.jsonl, rl_prompt_file: prompts.jsonl, max_prompt_tokens: 512}
rollout: {sampling: {max_tokens: 256}}
discriminator: {kind: overlap}
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_recipe_types_and_defaults(tmp_path):
    recipe = write(tmp_path, "r.yaml", MINIMAL + "optimizer: {lr: 1e-5, betas: [0.9, 0.95]}\nreward: {mode: loose}\n")
    config = load_config(recipe)
    assert config.optimizer.lr == 1e-5 and isinstance(config.optimizer.lr, float)  # YAML reads 1e-5 as str
    assert config.optimizer.betas == (0.9, 0.95)
    assert config.reward.mode is RewardMode.LOOSE
    assert config.model.hf_dir == "/models/qwen3" and config.model.tensor_parallel == 1
    assert config.checkpoint_dir == "runs/default/checkpoints"
    objective = config.objective_config()
    assert objective.variant == "uniapl" and objective.weights_at(5).mu == 0.5
    assert objective.weights_at(5).lambda_adv == 0.1


def test_base_inheritance_and_origins(tmp_path):
    write(tmp_path, "base.yaml", MINIMAL + "optimizer: {lr: 2.0e-6, warmup_steps: 10}\ntrain: {steps: 50}\n")
    (tmp_path / "sub").mkdir()
    child = write(tmp_path / "sub", "child.yaml", "base: ../base.yaml\noptimizer: {lr: 3.0e-6}\n")
    config = load_config(child)
    assert config.optimizer.lr == 3e-6            # the child's value
    assert config.optimizer.warmup_steps == 10    # merged, not replaced, from the base
    assert config.train.steps == 50
    bad = write(tmp_path / "sub", "bad.yaml", "base: ../base.yaml\ntrain: {steps: many}\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: train\.steps: expected an integer, got str 'many'"):
        load_config(bad)


def test_base_cycle_and_missing(tmp_path):
    write(tmp_path, "a.yaml", "base: b.yaml\n")
    write(tmp_path, "b.yaml", "base: a.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(tmp_path / "a.yaml")
    with pytest.raises(ConfigError, match="recipe file not found"):
        load_config(tmp_path / "nope.yaml")


def test_unknown_keys_suggest_closest(tmp_path):
    recipe = write(tmp_path, "r.yaml", MINIMAL + "optimizer: {lrr: 1.0}\n")
    with pytest.raises(ConfigError, match=r"r\.yaml: optimizer\.lrr: unknown key 'lrr' in optimizer; did you mean 'lr'\?"):
        load_config(recipe)
    recipe = write(tmp_path, "s.yaml", MINIMAL + "optimiser: {lr: 1.0}\n")
    with pytest.raises(ConfigError, match="did you mean 'optimizer'"):
        load_config(recipe)
    with pytest.raises(ConfigError, match=r"override 'rollout.engine.max_model_lenn=8'.*did you mean 'max_model_len'"):
        load_config(write(tmp_path, "t.yaml", MINIMAL), ["rollout.engine.max_model_lenn=8"])
    with pytest.raises(ConfigError, match=r"'lowercase' is not one of .*did you mean 'loose'"):
        load_config(write(tmp_path, "u.yaml", MINIMAL), ["reward.mode=lowercase"])
    with pytest.raises(ConfigError, match="unknown UniAPL variant 'agrpo'; did you mean 'a-grpo'"):
        load_config(write(tmp_path, "v.yaml", MINIMAL), ["objective.variant=agrpo"])


def test_overrides_are_typed_and_name_their_source(tmp_path):
    recipe = write(tmp_path, "r.yaml", MINIMAL)
    config = load_config(recipe, ["optimizer.lr=1e-4", "logging.progress_bar=false", "optimizer.betas=[0.8, 0.9]",
                                  "checkpoint.dir=null", "objective.chord.decay=linear", "name=exp1"])
    assert (config.optimizer.lr, config.logging.progress_bar, config.optimizer.betas) == (1e-4, False, (0.8, 0.9))
    assert config.objective.chord.decay == "linear" and config.name == "exp1"
    with pytest.raises(ConfigError, match=r"override 'train.steps=1.5': train\.steps: expected an integer, got float 1.5"):
        load_config(recipe, ["train.steps=1.5"])
    with pytest.raises(ConfigError, match="expected section.field=value"):
        load_config(recipe, ["train.steps"])
    with pytest.raises(ConfigError, match="expected true or false"):
        load_config(recipe, ["logging.progress_bar=maybe"])


def test_custom_stages_and_list_index_override(tmp_path):
    recipe = write(tmp_path, "r.yaml", MINIMAL + """
objective:
  variant: custom
  stages:
    - {name: warm, steps: 20, mu: {kind: constant, value: 1.0}, rollout_prompts: none}
    - {name: mix, mu: {kind: constant, value: 0.25}, lambda_adv: 0.2}
""")
    config = load_config(recipe, ["objective.stages.0.steps=30"])
    objective = config.objective_config()
    assert [s.name for s in objective.stages] == ["warm", "mix"]
    assert objective.weights_at(29).mu == 1.0 and objective.weights_at(30).mu == 0.25
    assert objective.weights_at(30).lambda_adv == 0.2
    assert isinstance(objective.stages[1].mu, MuSchedule)
    with pytest.raises(ConfigError, match="not an index of a list of 2"):
        load_config(recipe, ["objective.stages.5.steps=1"])
    with pytest.raises(ConfigError, match="set objective.variant=custom"):
        load_config(recipe, ["objective.variant=grpo"])


@pytest.mark.parametrize("override, message", [
    ("discriminator.kind=none", "uses the discriminator .* discriminator.kind is 'none'"),
    ("data.rl_prompt_file=null", "rolls out RL prompts but data.rl_prompt_file is not set"),
    ("data.max_prompt_tokens=4000", r"= 4256 exceeds rollout.engine.max_model_len \(4096\)"),
    ("train.micro_batch_tokens=1000", "cannot hold the longest sample"),
    ("model.hf_dir=null", "model.hf_dir is not set"),
    ("model.sequence_parallel=true", "model.sequence_parallel needs model.tensor_parallel > 1"),
    ("rollout.sampling.n=4", "set rollout.group_size instead"),
    ("optimizer.min_lr=1.0", "min_lr <= lr"),
    ("discriminator.kind=frozen", "discriminator.frozen.path is required"),
    ("objective.mu=1.5", r"objective.stages\[0\].mu.value must be in \[0, 1\]"),
    ("rollout.engine.gpu_memory_utilization=0", "rollout.engine: gpu_memory_utilization must be in"),
    ("model.context_parallel=2", "model.context_parallel=2: context parallelism needs every packed sample padded"),
    ("rollout.verify_every=-1", "rollout.verify_every must be >= 0"),
    ("rollout.group_size=65537", "rollout.group_size must be <= 65536"),
    ("rollout.sampling.top_p=0.9", r"rollout.sampling.top_p is 0.9: nucleus sampling renormalizes"),
    ("rollout.sampling.temperature=0", r"rollout.sampling.temperature is 0 \(greedy\)"),
    ("rollout.engine.logprobs_mode=raw_logprobs rollout.sampling.temperature=0.7",
     r"rollout.engine.logprobs_mode is 'raw_logprobs' but rollout.sampling.temperature is 0.7.*"
     r"set rollout.engine.logprobs_mode=processed_logprobs"),
    ("train.process_group_timeout_s=0", "train.process_group_timeout_s must be > 0"),
])
def test_cross_section_validation(tmp_path, override, message):
    recipe = write(tmp_path, "r.yaml", MINIMAL)
    with pytest.raises(ConfigError, match=message):
        load_config(recipe, override.split(" "))


def test_tempered_rollouts_are_accepted_with_processed_engine_logprobs(tmp_path):
    recipe = write(tmp_path, "r.yaml", MINIMAL)
    config = load_config(recipe, ["rollout.sampling.temperature=0.7"])
    assert config.rollout.engine.logprobs_mode == "processed_logprobs"  # the default
    assert config.rollout.sampling_config().temperature == 0.7


def test_staged_variant_needs_room_for_last_stage(tmp_path):
    recipe = write(tmp_path, "r.yaml", MINIMAL)
    with pytest.raises(ConfigError, match="the last stage would never run"):
        load_config(recipe, ["objective.variant=sft->grpo", "objective.first_stage_steps=100", "train.steps=100"])
    config = load_config(recipe, ["objective.variant=sft->grpo", "objective.first_stage_steps=40", "train.steps=100"])
    assert config.objective_config().stage_at(40)[0].name == "grpo"


def test_required_nested_field_and_env(tmp_path, monkeypatch):
    recipe = write(tmp_path, "r.yaml", MINIMAL.replace("{kind: overlap}", "{kind: frozen, frozen: {batch_size: 4}}"))
    with pytest.raises(ConfigError, match=r"discriminator\.frozen\.path: required key 'path'"):
        load_config(recipe)
    env_recipe = write(tmp_path, "e.yaml", MINIMAL.replace("/models/qwen3", "'${UNIAPL_TEST_MODELS}/qwen3'"))
    monkeypatch.setenv("UNIAPL_TEST_MODELS", "/data/m")
    assert load_config(env_recipe).model.hf_dir == "/data/m/qwen3"
    monkeypatch.delenv("UNIAPL_TEST_MODELS")
    with pytest.raises(ConfigError, match="e.yaml: model.hf_dir: environment variable UNIAPL_TEST_MODELS is not set"):
        load_config(env_recipe)


def test_malformed_yaml_names_line(tmp_path):
    recipe = write(tmp_path, "r.yaml", "model:\n  hf_dir: [unclosed\n")
    with pytest.raises(ConfigError, match=r"r\.yaml, line \d+: not valid YAML"):
        load_config(recipe)
    twice = write(tmp_path, "d.yaml", MINIMAL + "model: {tensor_parallel: 2}\n")
    with pytest.raises(ConfigError, match=r"d\.yaml, line 6: .*key 'model' is given twice \(first on line 2\)"):
        load_config(twice)


def test_save_resolved_round_trip(tmp_path):
    recipe = write(tmp_path, "r.yaml", MINIMAL + "optimizer: {betas: [0.9, 0.95]}\nreward: {mode: strict_fraction}\n")
    config = load_config(recipe, ["objective.variant=a-chord", "objective.chord.warmup_steps=5"])
    path = save_resolved(config, tmp_path / "run")
    assert path == tmp_path / "run" / RESOLVED_NAME
    again = load_config(path)
    assert again == config
    assert dump_config(again) == path.read_text()


def test_world_layout(tmp_path):
    config = load_config(write(tmp_path, "r.yaml", MINIMAL), ["model.tensor_parallel=2", "model.pipeline_parallel=2"])
    assert config.check_world(16) == 4
    with pytest.raises(ConfigError, match="not divisible"):
        config.check_world(6)


def test_sequence_length_multiple_of_the_layout(tmp_path):
    recipe = write(tmp_path, "r.yaml", MINIMAL)
    sp = ["model.tensor_parallel=4", "model.sequence_parallel=true"]
    assert load_config(recipe, sp).model.token_multiple == 4
    assert load_config(recipe, ["model.tensor_parallel=4"]).model.token_multiple == 1  # no SP: no split
    fp8 = load_config(recipe, [*sp, "model.fp8=e4m3"], validate=False).model
    assert fp8.token_multiple == 64  # 16 tokens per rank after the SP split (Megatron's FP8 alignment)
    assert load_config(recipe, [*sp, "model.fp8=e4m3", "model.fp8_recipe=mxfp8"], validate=False).model.token_multiple == 128
    with pytest.raises(ConfigError, match=r"train.micro_batch_tokens \(8190\) must be a multiple of 4, the sequence-length "
                                          r"multiple of model.tensor_parallel=4 with model.sequence_parallel=True"):
        load_config(recipe, [*sp, "train.micro_batch_tokens=8190"])


def test_engine_and_trainer_pairings(tmp_path):
    """The engine's TP is free of the trainer's layout but must divide the world and fit the heads."""
    recipe = write(tmp_path, "r.yaml", MINIMAL)
    config = load_config(recipe, ["model.tensor_parallel=2", "model.pipeline_parallel=2",
                                  "rollout.engine.tensor_parallel_size=4",
                                  "rollout.engine.distributed_executor_backend=external_launcher"])
    assert config.check_world(8) == 2  # PP with DP > 1 and an engine wider than TP: fine
    with pytest.raises(ConfigError, match="6 ranks are not divisible by model.tensor_parallel"):
        config.check_world(6)
    config.check_arch(num_attention_heads=32, num_key_value_heads=8, num_layers=36)
    config.check_arch(num_attention_heads=16, num_key_value_heads=2, num_layers=28)  # vLLM replicates KV heads
    with pytest.raises(ConfigError, match="model.tensor_parallel=2 does not divide the model's 1 key/value heads"):
        config.check_arch(num_attention_heads=16, num_key_value_heads=1, num_layers=28)
    with pytest.raises(ConfigError, match="rollout.engine.tensor_parallel_size=4 does not fit the model's 14 attention"):
        config.check_arch(num_attention_heads=14, num_key_value_heads=2, num_layers=28)
    with pytest.raises(ConfigError, match="pipeline_parallel x virtual_pipeline_stages = 2 does not divide the model's 27"):
        config.check_arch(num_attention_heads=32, num_key_value_heads=8, num_layers=27)
    wide = load_config(recipe, ["rollout.engine.tensor_parallel_size=8",
                                "rollout.engine.distributed_executor_backend=external_launcher"])
    with pytest.raises(ConfigError, match="4 ranks are not divisible by rollout.engine.tensor_parallel_size=8"):
        wide.check_world(4)
    with pytest.raises(ConfigError, match="tensor_parallel_size=3 does not divide plan.gpus_per_node=8: an engine "
                                          "would span nodes"):
        load_config(recipe, ["rollout.engine.tensor_parallel_size=3",
                             "rollout.engine.distributed_executor_backend=external_launcher"])


def test_defaults_need_a_model():
    with pytest.raises(ConfigError, match="model.hf_dir is not set"):
        RunConfig().validate()


def test_cli_prints_resolved(tmp_path, capsys):
    recipe = write(tmp_path, "r.yaml", MINIMAL)
    assert main(["--config", str(recipe), "train.steps=7"]) == 0
    out = capsys.readouterr().out
    assert "  steps: 7\n" in out
    assert main(["--config", str(recipe), "train.stepz=7"]) == 2
    assert "did you mean 'steps'" in capsys.readouterr().out
