"""The shipped recipes run in their own layouts: `tools/rehearse.py` on the CPU.

Each rehearsal loads a shipped recipe through the real loader, shrinks only the declared fields
(tests/test_rehearsal_shrink.py holds the list), spawns its ranks, trains 3 steps with a
checkpoint after step 2, trains step 3 again from that checkpoint, and checks the run against
thresholds. Three layouts, one world each (start-up dominates on a small machine):

    4B   the main job's layout as it is: TP 2 + sequence parallelism, DP 2 (of 4), four one-GPU
         engines, bfloat16, distributed optimizer, frozen reward model (a tiny classifier)
    0.6B DP 2 (of 8), in float32: this CPU has no AVX-512 BF16, so bf16 GEMMs are emulated
         (~25x slower); the 4B rehearsal covers bf16
    PP   the 0.6B recipe with pipeline parallelism 2 and data parallelism 2 (Megatron's default
         rank order puts the stages apart) under two engines of TP 2 that each span two
         data-parallel ranks of one stage: a layout the old sync refused
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.slow,
    pytest.mark.vllm,
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vLLM is not installed"),
]

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes"


@pytest.fixture(autouse=True)
def fresh_launch(monkeypatch):
    """The ranks are spawned by the rehearsal; this process's own one-rank world (other tests')
    must not look like a launcher to it."""
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    for name in ("UNIAPL_MODELS", "UNIAPL_DATA", "UNIAPL_RUNS"):
        monkeypatch.delenv(name, raising=False)


def rehearse(tmp_path, recipe, overrides=(), **kw):
    from megatron_uniapl.rehearsal import report
    from megatron_uniapl.rehearsal.run import rehearse as run

    outcome = run(str(RECIPES / recipe), list(overrides), tmp_path, **kw)
    text = report.render(outcome)
    assert outcome.passed, text
    return outcome, text


def test_main_job_4b_in_its_own_layout(tmp_path):
    outcome, text = rehearse(tmp_path, "qwen3_4b.yaml")
    config = outcome.plan.config
    m = config.model
    assert (m.tensor_parallel, m.pipeline_parallel, m.sequence_parallel, m.dtype) == (2, 1, True, "bfloat16")
    assert outcome.plan.world == 4 and config.rollout.engine.tensor_parallel_size == 1
    assert text.startswith("layout: 4 ranks = TP 2 x PP 1 x DP 2 (sequence parallel); 4 engine(s) of TP 1; bfloat16")
    for step in (1, 2, 3):
        row = outcome.reference[step]
        assert row["disc/score_mean"] is not None  # the frozen classifier scored every step
        assert row["weight_sync/logprob_mean_abs_diff"] < 0.05  # bf16 engine vs bf16 trainer
    assert outcome.resumed[3]["loss/total"] == outcome.reference[3]["loss/total"]


def test_0p6b_with_data_parallelism(tmp_path):
    outcome, _ = rehearse(tmp_path, "qwen3_0p6b.yaml", max_ranks=2, float32=True)
    assert outcome.plan.world == 2 and outcome.plan.config.check_world(2) == 2
    # float32 on both sides: the engine serves exactly the trainer's weights
    assert max(r["weight_sync/logprob_max_abs_diff"] for r in outcome.reference.values()) < 1e-4
    assert max(r["rollout/logprob_mismatch_max"] for r in outcome.reference.values()) < 1e-4


def test_pipeline_parallel_with_data_parallel_and_wider_engines(tmp_path):
    outcome, text = rehearse(tmp_path, "qwen3_0p6b.yaml",
                             ["model.pipeline_parallel=2", "rollout.engine.tensor_parallel_size=2"], float32=True)
    config = outcome.plan.config
    assert (config.model.pipeline_parallel, config.check_world(outcome.plan.world)) == (2, 2)
    assert "2 engine(s) of TP 2" in text
    assert max(r["weight_sync/logprob_max_abs_diff"] for r in outcome.reference.values()) < 1e-4
    assert os.path.isdir(tmp_path / "resume" / "checkpoints" / "iter_0000003")
