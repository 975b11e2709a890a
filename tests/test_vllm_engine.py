"""The vLLM rollout engine (CPU build) against Hugging Face transformers on a tiny float32 Qwen3.

One engine serves the whole module (starting one costs seconds); tests that need a given weight
version push it first, so they do not depend on each other's weights. The last engine test
shuts the module engine down and compares it with a fresh engine started from a saved checkpoint.
"""

from __future__ import annotations

import importlib.util
import shutil

import pytest
import torch

from megatron_uniapl.config.rollout import SamplingConfig, VLLMEngineConfig
from megatron_uniapl.model.tiny import create_tiny_qwen3
from megatron_uniapl.rollout.engine import EngineDeadError
from megatron_uniapl.rollout.servable import UnservableModelError
from megatron_uniapl.rollout.vllm_engine import VLLMEngine
from megatron_uniapl.rollout.weight_sync import (
    WeightSyncMismatchError,
    push_weights,
    tensor_bytes,
    verify_sync,
)

# find_spec, not importorskip: deselecting these tests (-m "not slow") must not pay vLLM's import
pytestmark = [
    pytest.mark.slow,
    pytest.mark.vllm,
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vLLM is not installed"),
]

FP32_TOL = 1e-4
LONG = 200  # longer than one KV block (128 tokens on CPU, checked below)


def engine_config() -> VLLMEngineConfig:
    return VLLMEngineConfig(dtype="float32", kv_cache_memory_bytes=64 << 20, max_model_len=512, enforce_eager=True)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return create_tiny_qwen3(tmp_path_factory.mktemp("tiny"), seed=0)


@pytest.fixture(scope="module")
def models(tiny_dir):
    """(base, updated): the checkpoint, and the same model after one AdamW step."""
    from transformers import Qwen3ForCausalLM

    base = Qwen3ForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32).eval()
    updated = Qwen3ForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32)
    optimizer = torch.optim.AdamW(updated.parameters(), lr=1e-2)
    ids = torch.randint(0, 151000, (2, 24), generator=torch.Generator().manual_seed(1))
    updated(input_ids=ids, labels=ids).loss.backward()
    optimizer.step()
    return base, updated.eval()


@pytest.fixture(scope="module")
def engine(tiny_dir):
    eng = VLLMEngine(tiny_dir, engine_config())
    yield eng
    eng.shutdown()


def hf_logprobs(model, sequences, prompt_lens):
    """Reference: log-softmax of transformers' logits at the tokens after each prompt."""
    out = []
    with torch.no_grad():
        for seq, plen in zip(sequences, prompt_lens):
            logp = model(torch.tensor([seq])).logits[0].float().log_softmax(-1)
            targets = torch.tensor(seq[plen:])
            out.append(logp[plen - 1 : len(seq) - 1].gather(-1, targets[:, None])[:, 0].tolist())
    return out


def use_weights(engine, model, version):
    if engine.weight_version != version:
        engine.update_weights(model.state_dict().items(), version)


def max_diff(a, b):
    return max(abs(x - y) for xs, ys in zip(a, b) for x, y in zip(xs, ys))


def fixed_sequences():
    gen = torch.Generator().manual_seed(5)
    seqs = [torch.randint(0, 151000, (n,), generator=gen).tolist() for n in (9, 40, LONG)]
    return seqs, [1, 17, 150]


def test_block_size_is_what_the_long_prompts_exceed(engine):
    assert engine.block_size == 128 < LONG


def test_score_matches_transformers(engine, models):
    use_weights(engine, models[0], 0)
    seqs, plens = fixed_sequences()
    ours = engine.score(seqs, plens)
    assert [len(x) for x in ours] == [8, 23, 50]
    assert max_diff(ours, hf_logprobs(models[0], seqs, plens)) < FP32_TOL


def test_sampled_logprobs_match_transformers(engine, models):
    use_weights(engine, models[0], 0)
    prompts = [[100, 200, 300], fixed_sequences()[0][1]]
    gens = engine.generate(prompts, SamplingConfig(n=3, temperature=1.0, max_tokens=12, seed=7))
    assert [g.prompt_index for g in gens] == [0, 0, 0, 1, 1, 1]
    assert len({tuple(g.token_ids) for g in gens}) == 6
    for g in gens:
        assert len(g.token_ids) == len(g.logprobs) == 12 and g.finish_reason == "length"
        prompt = prompts[g.prompt_index]
        ref = hf_logprobs(models[0], [prompt + g.token_ids], [len(prompt)])[0]
        assert max(abs(a - b) for a, b in zip(g.logprobs, ref)) < FP32_TOL


def test_greedy_follows_transformers_argmax_and_seeds_reproduce(engine, models):
    use_weights(engine, models[0], 0)
    prompt = [151644, 872, 198, 9707, 151645, 198]
    greedy = engine.generate([prompt], SamplingConfig(temperature=0.0, max_tokens=10))[0]
    with torch.no_grad():
        ref = models[0].generate(torch.tensor([prompt]), max_new_tokens=10, do_sample=False)[0, len(prompt):]
    assert greedy.token_ids == ref.tolist()
    a = engine.generate([prompt], SamplingConfig(n=2, max_tokens=8, seed=11))
    b = engine.generate([prompt], SamplingConfig(n=2, max_tokens=8, seed=11))
    c = engine.generate([prompt], SamplingConfig(n=2, max_tokens=8, seed=12))
    assert [g.token_ids for g in a] == [g.token_ids for g in b] != [g.token_ids for g in c]
    twice = engine.generate([prompt, prompt], SamplingConfig(max_tokens=8, seed=11))
    assert twice[0].token_ids == a[0].token_ids != twice[1].token_ids  # seed + prompt index


def test_per_prompt_seeds_and_why_neighbouring_seeds_overlap(engine, models):
    """vLLM seeds a prompt's j-th sample with seed + j, so seeds 1 apart share a random stream
    (the old per-call `seed + prompt index` scheme); `rollout.seeds` spaces them 2**16 apart."""
    from megatron_uniapl.rollout.seeds import prompt_seeds

    use_weights(engine, models[0], 0)
    prompt = [151644, 872, 198, 9707, 151645, 198]
    two = SamplingConfig(n=2, max_tokens=8, temperature=1.0)
    old = engine.generate([prompt, prompt], two, seeds=[40, 41])
    assert old[1].token_ids == old[2].token_ids  # prompt 0's sample 1 == prompt 1's sample 0
    new = engine.generate([prompt, prompt], two, seeds=prompt_seeds(0, 3, [0, 1]))
    assert len({tuple(g.token_ids) for g in new}) == 4
    again = engine.generate([prompt], two, seeds=prompt_seeds(0, 3, [1]))
    assert [g.token_ids for g in again] == [g.token_ids for g in new[2:]]  # a prompt's samples do not
    # depend on which other prompts share its engine call
    with pytest.raises(ValueError, match="2 seeds for 1 prompts"):
        engine.generate([prompt], two, seeds=[1, 2])
    assert engine.generate([], two, seeds=[]) == []  # an engine without a share of the step


def test_stop_string_ends_sample_before_it(engine, models):
    use_weights(engine, models[0], 0)
    prompt = [100, 200, 300]
    full = engine.generate([prompt], SamplingConfig(temperature=0.0, max_tokens=16))[0]
    stop = full.text[len(full.text) // 2 : len(full.text) // 2 + 3]
    cut = engine.generate([prompt], SamplingConfig(temperature=0.0, max_tokens=16, stop=[stop]))[0]
    assert cut.finish_reason == "stop"
    assert cut.text == full.text[: full.text.index(stop)]
    assert cut.token_ids == full.token_ids[: len(cut.token_ids)] and len(cut.token_ids) < 16


def test_update_weights_in_buckets_matches_new_model(engine, models):
    base, updated = models
    use_weights(engine, base, 0)
    seqs, plens = fixed_sequences()
    before = engine.score(seqs, plens)
    state = list(updated.state_dict().items())
    stats = push_weights(engine, iter(state), version=1, bucket_bytes=40_000)
    assert engine.weight_version == 1
    assert stats.num_tensors == len(state) and stats.num_bytes == sum(tensor_bytes(t) for _, t in state)
    assert stats.num_buckets > 10  # q/k/v and gate/up of one layer land in different buckets
    after = engine.score(seqs, plens)
    assert max_diff(after, hf_logprobs(updated, seqs, plens)) < FP32_TOL
    assert max_diff(after, before) > 0.05
    check = verify_sync(engine, seqs, plens, lambda s, p: hf_logprobs(updated, s, p), tolerance=FP32_TOL)
    assert check.num_tokens == 81 and check.max_abs_diff < FP32_TOL
    with pytest.raises(WeightSyncMismatchError, match="above the tolerance"):
        verify_sync(engine, seqs, plens, lambda s, p: hf_logprobs(base, s, p), tolerance=FP32_TOL)


def test_long_prompt_after_update_sees_new_weights(engine, models):
    base, updated = models
    use_weights(engine, base, 0)
    prompt = fixed_sequences()[0][2]
    greedy = SamplingConfig(temperature=0.0, max_tokens=6)
    old = engine.generate([prompt], greedy)[0]  # leaves the prompt's first block in the prefix cache
    assert max_diff([old.logprobs], hf_logprobs(base, [prompt + old.token_ids], [LONG])) < FP32_TOL
    use_weights(engine, updated, 1)
    new = engine.generate([prompt], greedy)[0]
    assert max_diff([new.logprobs], hf_logprobs(updated, [prompt + new.token_ids], [LONG])) < FP32_TOL


def test_bad_updates_are_refused_and_named(engine, models):
    base, updated = models
    use_weights(engine, base, 0)
    seqs, plens = fixed_sequences()
    state = dict(updated.state_dict())
    bad_name = [("model.layers.0.self_attn.q_proj.wieght", state["model.layers.0.self_attn.q_proj.weight"])]
    with pytest.raises(ValueError, match=r"q_proj\.wieght"):
        engine.update_weights(bad_name + list(state.items()), version=1)
    bad_shape = [("model.norm.weight", torch.ones(65))] + list(state.items())
    with pytest.raises(ValueError, match=r"'model\.norm\.weight' has shape \(65,\).*\(64,\)"):
        engine.update_weights(bad_shape, version=1)
    # refused before anything was loaded: still the base weights, still usable
    assert engine.weight_version == 0
    assert max_diff(engine.score(seqs, plens), hf_logprobs(base, seqs, plens)) < FP32_TOL
    partial = [(k, v) for k, v in state.items() if ".layers.1." not in k]
    with pytest.raises(ValueError, match="were not sent"):
        engine.update_weights(partial, version=1)
    with pytest.raises(RuntimeError, match="mix"):
        engine.score(seqs, plens)
    engine.update_weights(state.items(), version=1)
    assert max_diff(engine.score(seqs, plens), hf_logprobs(updated, seqs, plens)) < FP32_TOL


def test_bad_requests_leave_engine_usable(engine):
    with pytest.raises(ValueError, match="prompt 1 has 600 tokens"):
        engine.generate([[1, 2], [3] * 600], SamplingConfig())
    with pytest.raises(ValueError, match="top_p"):
        engine.generate([[1, 2]], SamplingConfig(top_p=0.0))
    with pytest.raises(ValueError, match="prompt 0, position 1: token id 151936 is outside"):
        engine.generate([[1, 151936]], SamplingConfig())
    with pytest.raises(ValueError, match="prompt_len 0"):
        engine.score([[1, 2, 3]], [0])
    assert len(engine.generate([[1, 2]], SamplingConfig(max_tokens=2))) == 1


def test_sleep_and_wake_order_on_cpu(engine):
    engine.sleep(1)
    assert engine.asleep == {"weights", "kv_cache"}
    with pytest.raises(RuntimeError, match="asleep"):
        engine.generate([[1, 2]], SamplingConfig(max_tokens=2))
    with pytest.raises(RuntimeError, match="weights are asleep"):
        engine.update_weights([], version=9)
    engine.wake_up(["weights"])
    with pytest.raises(RuntimeError, match="kv_cache"):
        engine.generate([[1, 2]], SamplingConfig(max_tokens=2))
    engine.wake_up(["kv_cache"])
    assert engine.asleep == frozenset()
    assert len(engine.generate([[1, 2]], SamplingConfig(max_tokens=2))) == 1
    with pytest.raises(ValueError, match="level 2 is not offered"):
        engine.sleep(2)
    with pytest.raises(ValueError, match="unknown tags"):
        engine.wake_up(["optimizer"])


def test_colocation_round_with_the_real_engine(engine, models):
    from megatron_uniapl.colocation.offload import TensorOffloader
    from megatron_uniapl.colocation.phases import ColocationScheduler, Phase

    base, updated = models
    use_weights(engine, base, 0)
    moments = [torch.randn(1000), torch.randn(1000)]  # stands in for optimizer state
    offloader = TensorOffloader(lambda: moments, skip_on_offload_device=False)
    seqs, plens = fixed_sequences()

    def check(eng):
        return verify_sync(eng, seqs, plens, lambda s, p: hf_logprobs(updated, s, p), tolerance=FP32_TOL)

    sched = ColocationScheduler(engine, offloader, trainer_version=lambda: 1, sync_check=check)
    assert engine.asleep == {"weights", "kv_cache"}
    prompt = seqs[2]
    gens = sched.rollout(updated.state_dict().items(), [prompt], SamplingConfig(temperature=0.0, max_tokens=4))
    assert sched.phase is Phase.TRAIN and engine.weight_version == 1 and engine.asleep == {"weights", "kv_cache"}
    assert max_diff([gens[0].logprobs], hf_logprobs(updated, [prompt + gens[0].token_ids], [LONG])) < FP32_TOL
    assert sched.metrics["time/generate_s"] > 0 and sched.metrics["mem/offloaded_gib"] > 0
    assert sched.metrics["weight_sync/logprob_max_abs_diff"] < FP32_TOL and sched.metrics["weight_sync/gb"] > 0
    engine.wake_up()


def test_refusals_before_vllm_starts(engine, tiny_dir, tmp_path):
    with pytest.raises(RuntimeError, match="still live"):
        VLLMEngine(tiny_dir, engine_config())
    small = create_tiny_qwen3(tmp_path / "hd16", head_dim=16, with_tokenizer=False)
    with pytest.raises(UnservableModelError, match=r"config\.json: field 'head_dim' is 16"):
        VLLMEngine(small, engine_config())
    with pytest.raises(ValueError, match="kv_cache_memory_bytes"):
        VLLMEngine(tiny_dir, VLLMEngineConfig())
    with pytest.raises(ValueError, match="external_launcher"):
        VLLMEngine(tiny_dir, VLLMEngineConfig(tensor_parallel_size=2))


def test_updated_engine_equals_fresh_engine_from_saved_checkpoint(engine, models, tiny_dir, tmp_path, monkeypatch):
    updated = models[1]
    use_weights(engine, updated, 1)
    prompts = [[151644, 872, 198, 9707, 151645, 198], fixed_sequences()[0][2]]
    requests = [SamplingConfig(temperature=0.0, max_tokens=8), SamplingConfig(n=2, max_tokens=8, seed=3)]
    live = [engine.generate(prompts, s) for s in requests]
    engine.shutdown()
    with pytest.raises(EngineDeadError, match="shut down"):
        engine.generate(prompts, requests[0])
    saved = tmp_path / "updated"
    updated.save_pretrained(saved)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt"):
        shutil.copyfile(tiny_dir / name, saved / name)
    fresh = VLLMEngine(saved, engine_config())
    try:
        for sampling, ours in zip(requests, live):
            theirs = fresh.generate(prompts, sampling)
            assert [g.token_ids for g in ours] == [g.token_ids for g in theirs]
            assert [g.logprobs for g in ours] == [g.logprobs for g in theirs]  # bit for bit
        monkeypatch.setattr(fresh._llm, "generate", _raise_engine_failure)
        with pytest.raises(EngineDeadError, match="injected"):
            fresh.generate(prompts, requests[0])
        monkeypatch.undo()
        with pytest.raises(EngineDeadError, match="injected"):
            fresh.score([[1, 2, 3]], [1])
    finally:
        fresh.shutdown()


def _raise_engine_failure(*args, **kwargs):
    raise RuntimeError("injected worker failure")


def test_colocated_tensor_parallel_engines_under_torchrun(tiny_dir, tmp_path):
    """Two ranks, vLLM TP=2 via external_launcher: bucketed updates reach both shards, both ranks
    sample the same tokens, and the trainer's world outlives the engines."""
    import json
    import os
    import signal
    import socket
    import subprocess
    import sys
    from pathlib import Path

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    out = tmp_path / "ranks.json"
    worker = Path(__file__).with_name("vllm_colocated_worker.py")
    # Unbuffered, so a failure shows how far each rank got; an explicit loopback address, so
    # neither the rendezvous nor gloo depends on how this machine's hostname resolves.
    # Nothing of another launch (PET_* are torchrun's defaults for its own arguments).
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PET_", "TORCHELASTIC_")) and k not in (
        "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env.update(PYTHONPATH=str(Path(__file__).resolve().parents[1]), PYTHONUNBUFFERED="1", GLOO_SOCKET_IFNAME="lo")
    argv = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
            "--master-port", str(port), str(worker), str(tiny_dir), str(out)]
    # Its own session, so a timeout ends the ranks too, not only torchrun (orphaned ranks would
    # slow every later test).
    with subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          start_new_session=True) as child:
        try:
            output, _ = child.communicate(timeout=600)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            output, _ = child.communicate()
            pytest.fail(f"two ranks with TP-2 engines did not finish in 600 s; their output:\n{output[-6000:]}")
    assert child.returncode == 0, output[-3000:]
    ranks = json.loads(out.read_text())
    for rank in ranks:
        assert rank["result"]["diff_before"] < FP32_TOL and rank["result"]["diff_after"] < FP32_TOL
        assert rank["result"]["moved"] > 0.05
    assert ranks[0]["tokens"] == ranks[1]["tokens"] and len(ranks[0]["tokens"]) == 2
