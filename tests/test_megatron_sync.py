"""Megatron policy -> live vLLM engine (CPU build): sync, verification, layouts, exported checkpoints.

In this process: a TP=1 Megatron model and one engine for the module (vLLM allows one live engine
per process); the last test shuts it down and starts a fresh engine from an exported checkpoint.
In one spawned world of 2 ranks: a vLLM TP=2 engine over both ranks, trained at TP=2 and at PP=2.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from sync_helpers import (
    FP32_TOL,
    LONG_PROMPT,
    engine_config,
    one_step,
    prompts_and_checks,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.vllm,
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vLLM is not installed"),
]

ROOT = Path(__file__).resolve().parents[1]


def max_diff(a, b):
    return max(abs(x - y) for xs, ys in zip(a, b) for x, y in zip(xs, ys))


@pytest.fixture(scope="module")
def module_world():
    """One Megatron world (TP=1, PP=1) for the module: the engine and model outlive single tests."""
    from megatron_uniapl import parallel

    parallel.initialize(1, 1)


@pytest.fixture(scope="module")
def policy(tiny_tied, module_world):
    from parity_utils import megatron_from_hf

    return megatron_from_hf(tiny_tied)


@pytest.fixture(scope="module")
def engine(tiny_tied, module_world):
    from megatron_uniapl.rollout.vllm_engine import VLLMEngine

    eng = VLLMEngine(tiny_tied, engine_config())
    yield eng
    eng.shutdown()


@pytest.fixture(scope="module")
def trained(policy, engine):
    """generate -> one optimizer step on the Megatron model -> sync (version 1); what was seen."""
    from megatron_uniapl.config.rollout import SamplingConfig
    from megatron_uniapl.rollout.megatron_sync import (
        MegatronSyncConfig,
        sync_megatron_weights,
    )
    from megatron_uniapl.rollout.megatron_verify import megatron_logprobs

    arch, model = policy
    prompts, seqs, plens = prompts_and_checks(arch.vocab_size)
    before = engine.score(seqs, plens)
    trainer_before = megatron_logprobs([model], seqs, plens)
    greedy = SamplingConfig(temperature=0.0, max_tokens=6)
    old_greedy = engine.generate(prompts[:1], greedy)[0]  # leaves the long prompt's first block cached
    gens = engine.generate(prompts, SamplingConfig(n=2, max_tokens=8, seed=1))
    one_step([model], [prompts[g.prompt_index] + g.token_ids for g in gens])
    stats = sync_megatron_weights(engine, [model], arch, version=1, config=MegatronSyncConfig(bucket_bytes=40_000))
    return {"prompts": prompts, "seqs": seqs, "plens": plens, "before": before,
            "trainer_before": trainer_before, "old_greedy": old_greedy, "stats": stats}


def test_engine_equals_megatron_before_and_after_a_step(policy, engine, trained):
    from megatron_uniapl.rollout.megatron_verify import megatron_logprobs

    arch, model = policy
    seqs, plens = trained["seqs"], trained["plens"]
    assert engine.block_size == 128 < min(LONG_PROMPT, len(seqs[2]))
    assert max_diff(trained["before"], trained["trainer_before"]) < FP32_TOL
    after = engine.score(seqs, plens)
    assert engine.weight_version == 1
    assert max_diff(after, megatron_logprobs([model], seqs, plens)) < FP32_TOL
    assert max_diff(after, trained["before"]) > 0.05  # the step moved the policy
    stats = trained["stats"]
    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    assert stats.num_bytes == param_bytes  # tied: the output layer is the embedding, sent once
    assert stats.num_buckets > 5 and stats.max_bucket_bytes == arch.vocab_size * arch.hidden_size * 4
    assert stats.metrics()["weight_sync/gb_per_s"] > 0


def test_long_prompt_after_sync_samples_from_new_weights(policy, engine, trained):
    from megatron_uniapl.config.rollout import SamplingConfig
    from megatron_uniapl.rollout.megatron_verify import megatron_logprobs

    _, model = policy
    prompt = trained["prompts"][0]
    new = engine.generate([prompt], SamplingConfig(temperature=0.0, max_tokens=6))[0]
    ref = megatron_logprobs([model], [prompt + new.token_ids], [len(prompt)])[0]
    # The prompt's first KV block was cached under the old weights (trained["old_greedy"]); a
    # cache that survived the sync would make these differ.
    assert max(abs(a - b) for a, b in zip(new.logprobs, ref)) < FP32_TOL


def test_engine_logprobs_of_tempered_samples_equal_the_trainers_tempered_logprobs(policy, engine, trained):
    """Sampled at T = 0.7, the engine (processed_logprobs, the default) returns the log-probs of
    softmax(z / 0.7), which is what the trainer scores rollout tokens with (issue 12)."""
    from megatron_uniapl.config.rollout import SamplingConfig
    from megatron_uniapl.rollout.megatron_verify import megatron_logprobs

    _, model = policy
    assert engine.config.logprobs_mode == "processed_logprobs"
    prompt = trained["prompts"][0]
    gens = engine.generate([prompt], SamplingConfig(n=2, temperature=0.7, max_tokens=8, seed=11))
    seqs, plens = [prompt + g.token_ids for g in gens], [len(prompt)] * len(gens)
    engine_lp = [g.logprobs for g in gens]
    tempered = megatron_logprobs([model], seqs, plens, temperature=0.7)
    diff = max_diff(engine_lp, tempered)
    print(f"engine vs trainer tempered log-probs at T=0.7: max |diff| {diff:.3g}")
    assert diff < FP32_TOL
    assert max_diff(engine_lp, megatron_logprobs([model], seqs, plens)) > 0.05  # T = 1 would not do


def test_verifier_runs_every_n_syncs_in_the_colocation_round(policy, engine, trained):
    from megatron_uniapl.colocation.megatron_state import megatron_train_state
    from megatron_uniapl.colocation.phases import ColocationScheduler, Phase
    from megatron_uniapl.config.rollout import SamplingConfig
    from megatron_uniapl.rollout.megatron_sync import (
        MegatronSyncConfig,
        MegatronWeightSync,
    )
    from megatron_uniapl.rollout.megatron_verify import SyncVerifier, SyncVerifyConfig

    arch, model = policy
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.tensor([[1, 2, 3]]), torch.arange(3)[None], None).sum().backward()
    optimizer.step()  # Adam state exists now; the weights moved, so the next push matters
    source = MegatronWeightSync([model], arch, MegatronSyncConfig(bucket_bytes=4 << 20))
    verifier = SyncVerifier([model], trained["seqs"], trained["plens"], SyncVerifyConfig(every_n_syncs=2))
    state = megatron_train_state([model], optimizer, skip_on_offload_device=False)
    version = [2]
    sched = ColocationScheduler(engine, state, trainer_version=lambda: version[0], sync_check=verifier)
    greedy = SamplingConfig(temperature=0.0, max_tokens=4)
    checked = []
    for step in range(3):
        version[0] = 2 + step
        sched.rollout(source, trained["prompts"][:1], greedy)
        checked.append("weight_sync/logprob_max_abs_diff" in sched.metrics)
        assert sched.phase is Phase.TRAIN and engine.weight_version == version[0]
        assert sched.metrics["weight_sync/gb"] == source.last.num_bytes / 1e9 > 0
    assert checked == [True, False, True] and verifier.num_syncs == 3
    assert verifier.last.max_abs_diff < FP32_TOL
    assert sched.metrics["mem/offloaded_gib"] > 0 and not state.offloaded
    model.zero_grad(set_to_none=True)
    engine.wake_up()


def test_verification_fails_loudly_when_weights_differ(policy, engine, trained):
    from megatron_uniapl.rollout.megatron_verify import verify_megatron_sync
    from megatron_uniapl.rollout.weight_sync import WeightSyncMismatchError

    _, model = policy
    norm = model.decoder.final_layernorm.weight
    with torch.no_grad():
        norm.mul_(1.5)
    try:
        with pytest.raises(WeightSyncMismatchError, match=r"\(Megatron\) by up to .* above the tolerance"):
            verify_megatron_sync(engine, [model], trained["seqs"], trained["plens"], FP32_TOL)
    finally:
        with torch.no_grad():
            norm.div_(1.5)
    check = verify_megatron_sync(engine, [model], trained["seqs"], trained["plens"], FP32_TOL)
    assert check.num_tokens == sum(len(s) - p for s, p in zip(trained["seqs"], trained["plens"]))


def test_sync_of_another_model_size_is_refused_before_anything_is_sent(policy, engine, trained, tiny_tied):
    from megatron_uniapl.config.model import ModelOptions
    from megatron_uniapl.model.builder import build_qwen3_model
    from megatron_uniapl.model.hf_config import parse_qwen3_config
    from megatron_uniapl.rollout.megatron_sync import (
        MegatronSyncConfig,
        WeightLayoutMismatchError,
        sync_megatron_weights,
    )
    from megatron_uniapl.rollout.megatron_verify import megatron_logprobs

    _, model = policy
    config = json.loads((Path(tiny_tied) / "config.json").read_text())
    version = engine.weight_version
    options = ModelOptions(dtype="float32", spec="portable")
    wider = parse_qwen3_config({**config, "hidden_size": 96})
    with pytest.raises(WeightLayoutMismatchError,
                       match=r"model\.embed_tokens\.weight: trainer \(151936, 96\), engine \(151936, 64\)"):
        sync_megatron_weights(engine, [build_qwen3_model(wider, options)], wider, version + 1)
    deeper = parse_qwen3_config({**config, "num_hidden_layers": 3})
    with pytest.raises(WeightLayoutMismatchError, match=r"trainer tensors are not in the engine's model \(e\.g\. \['model\.layers\.2\."):
        sync_megatron_weights(engine, [build_qwen3_model(deeper, options)], deeper, version + 1)
    # Without the up-front check the engine's own bucket check still names the tensor.
    with pytest.raises(ValueError, match=r"'model\.embed_tokens\.weight' has shape \(151936, 96\)"):
        sync_megatron_weights(engine, [build_qwen3_model(wider, options)], wider, version + 1,
                              MegatronSyncConfig(check_layout=False))
    assert engine.weight_version == version
    seqs, plens = trained["seqs"], trained["plens"]
    assert max_diff(engine.score(seqs, plens), megatron_logprobs([model], seqs, plens)) < FP32_TOL


def save_megatron_checkpoint(model, hf_dir: Path, out: Path) -> None:
    """The live model as a converted Megatron checkpoint (what `convert_hf.py import` writes)."""
    from megatron_uniapl.convert import mcore_checkpoint as ckpt

    token = ckpt.new_token()
    stage = ckpt.staging_dir(str(out), token)
    ckpt.save_model_weights([model], stage / "weights")
    has_tok = ckpt.copy_hf_files(str(hf_dir), stage / "hf")
    meta = ckpt.ModelCheckpointMeta(
        hf_config=json.loads((hf_dir / "config.json").read_text()), spec=model.uniapl_spec,
        tensor_parallel=1, pipeline_parallel=1, dtype="float32", has_tokenizer=has_tok,
    )
    (stage / ckpt.META_NAME).write_text(json.dumps(meta.to_json(), indent=2))
    ckpt.publish(stage, str(out))


def test_synced_engine_samples_like_a_fresh_engine_from_the_exported_checkpoint(
    policy, engine, trained, tiny_tied, tmp_path
):
    """Last engine test of the module: it shuts the module engine down."""
    from megatron_uniapl.config.rollout import SamplingConfig
    from megatron_uniapl.rollout.megatron_sync import sync_megatron_weights
    from megatron_uniapl.rollout.vllm_engine import VLLMEngine

    arch, model = policy
    sync_megatron_weights(engine, [model], arch, version=engine.weight_version + 1)
    prompts = trained["prompts"]
    requests = [SamplingConfig(temperature=0.0, max_tokens=8), SamplingConfig(n=2, max_tokens=8, seed=3)]
    live = [engine.generate(prompts, s) for s in requests]
    save_megatron_checkpoint(model, Path(tiny_tied), tmp_path / "mcore")
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "convert_hf.py"), "export", "--mcore-dir", str(tmp_path / "mcore"),
         "--out-dir", str(tmp_path / "hf")], env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    engine.shutdown()
    fresh = VLLMEngine(tmp_path / "hf", engine_config())
    try:
        for sampling, ours in zip(requests, live):
            theirs = fresh.generate(prompts, sampling)
            assert [g.token_ids for g in ours] == [g.token_ids for g in theirs]
            assert [g.logprobs for g in ours] == [g.logprobs for g in theirs]  # bit for bit
    finally:
        fresh.shutdown()


def test_tensor_and_pipeline_parallel_training_sync_into_a_tp2_engine(tiny_untied, tmp_path, monkeypatch):
    """One spawned world of 2 ranks, one vLLM TP=2 engine (a shard per rank); Megatron at TP=2,
    then at PP=2 (the last stage's tensors, lm_head included, reach the first stage's engine
    shard by broadcast)."""
    from megatron_sync_worker import run_all

    from megatron_uniapl import parallel

    out = tmp_path / "ranks.json"
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):  # set by this process's own world of one
        monkeypatch.delenv(name, raising=False)
    parallel.run_world(run_all, 2, str(tiny_untied), str(out))
    ranks = json.loads(out.read_text())
    model_bytes = sum(p.numel() * 4 for p in _hf_params(tiny_untied))
    for name in ("tp2", "pp2"):
        seen = [r for rank in ranks for r in rank if r["name"] == name]
        assert len(seen) == 2, name
        for r in seen:
            assert r["base_max"] < FP32_TOL and r["after_max"] < FP32_TOL and r["regen_max"] < FP32_TOL, r
            assert r["moved"] > 0.05, r
            assert r["num_bytes"] == model_bytes and r["num_buckets"] > 5, r
        assert seen[0]["tokens"] == seen[1]["tokens"] and seen[0]["version"] == seen[1]["version"]


def _hf_params(hf_dir):
    from safetensors import safe_open

    for path in Path(hf_dir).glob("*.safetensors"):
        with safe_open(str(path), framework="pt") as f:
            for key in f.keys():  # noqa: SIM118 (a safetensors handle, not a dict)
                yield f.get_tensor(key)
