"""Tensor- and pipeline-parallel parity with transformers, and converted checkpoints loaded at
other layouts. Multi-process (gloo on CPU): each world is started once and runs several
scenarios, because process start-up dominates on a 2-core machine.

Interleaved (virtual) pipelines are included: over gloo they silently swapped activations and
gradients with batched p2p (docs/platform_notes.md); the builder disables batched p2p without CUDA, and
the VPP scenario proves the result exact.
"""

from __future__ import annotations

import glob

import pytest
import torch
from parity_utils import hf_reference

from megatron_uniapl import parallel

pytestmark = pytest.mark.slow

LOGIT_TOL = 1e-4


def collect(out_dir, name):
    """Logits/loss from the last stage, and gradients merged over stages (tied ones summed)."""
    logits = loss = None
    grads: dict[str, torch.Tensor] = {}
    for path in sorted(glob.glob(f"{out_dir}/{name}_rank*.pt")):
        r = torch.load(path)
        if r["dp_rank"] != 0:  # data-parallel replicas computed the same thing
            continue
        if "logits" in r and r["tp_rank"] == 0:
            logits, loss = r["logits"], r["loss"]
        if r["tp_rank"] == 0:
            for k, v in r["grads"].items():
                grads[k] = grads[k] + v if k in grads else v
    if "lm_head.weight@tied" in grads:  # the tied output layer on the last stage
        grads["model.embed_tokens.weight"] = grads["model.embed_tokens.weight"] + grads.pop("lm_head.weight@tied")
    return logits, loss, grads


def assert_matches_hf(hf_dir, out_dir, name):
    from dist_worker import _inputs

    ids, _ = _inputs()
    ref_logits, ref_loss, ref_grads = hf_reference(hf_dir, ids)
    logits, loss, grads = collect(out_dir, name)
    assert logits is not None, f"{name}: no last-stage output"
    assert (logits - ref_logits).abs().max().item() < LOGIT_TOL, name
    assert abs(loss - ref_loss.item()) < 1e-5, name
    assert set(ref_grads) <= set(grads), (name, set(ref_grads) - set(grads))
    for k, ref in ref_grads.items():
        diff = (grads[k] - ref).abs().max().item()
        assert diff < 1e-5 * max(1.0, ref.abs().max().item()), f"{name}: {k} grad diff {diff:.2e}"


@pytest.fixture(scope="module")
def two_rank_results(tiny_tied, tiny_untied, tmp_path_factory):
    """One world of 2 processes running every 2-rank scenario, after a TP=2 conversion."""
    from dist_worker import run_all

    from megatron_uniapl.convert.tool import main as convert

    out = tmp_path_factory.mktemp("dist2")
    mcore = out / "mcore_tp2"
    assert convert(["import", "--hf-dir", str(tiny_untied), "--out-dir", str(mcore), "--tp", "2", "--dtype", "float32"]) == 0
    scenarios = [
        dict(name="tp2_tied", hf_dir=str(tiny_tied), out_dir=str(out), tp=2, pp=1),
        dict(name="tp2_untied", hf_dir=str(tiny_untied), out_dir=str(out), tp=2, pp=1),
        dict(name="pp2_tied", hf_dir=str(tiny_tied), out_dir=str(out), tp=1, pp=2),
        dict(name="pp2_untied", hf_dir=str(tiny_untied), out_dir=str(out), tp=1, pp=2),
        dict(name="pp2_vpp2", hf_dir=str(tiny_untied), out_dir=str(out), tp=1, pp=2, vpp=2),
        # The TP=2 conversion, loaded at PP=2 and at TP=1 (data-parallel 2).
        dict(name="ckpt_tp2_at_pp2", hf_dir=str(tiny_untied), out_dir=str(out), tp=1, pp=2, mcore_dir=str(mcore)),
        dict(name="ckpt_tp2_at_tp1", hf_dir=str(tiny_untied), out_dir=str(out), tp=1, pp=1, mcore_dir=str(mcore)),
    ]
    parallel.run_world(run_all, 2, scenarios)
    return out


@pytest.mark.parametrize(
    "name, fixture",
    [
        ("tp2_tied", "tiny_tied"), ("tp2_untied", "tiny_untied"),
        ("pp2_tied", "tiny_tied"), ("pp2_untied", "tiny_untied"), ("pp2_vpp2", "tiny_untied"),
        ("ckpt_tp2_at_pp2", "tiny_untied"), ("ckpt_tp2_at_tp1", "tiny_untied"),
    ],
)
def test_two_rank_layouts_match_hf(two_rank_results, name, fixture, request):
    assert_matches_hf(request.getfixturevalue(fixture), two_rank_results, name)


def test_tp2_pp2_matches_hf(tiny_untied, tmp_path):
    from dist_worker import run_all

    parallel.run_world(run_all, 4, [dict(name="tp2pp2", hf_dir=str(tiny_untied), out_dir=str(tmp_path), tp=2, pp=2)])
    assert_matches_hf(tiny_untied, tmp_path, "tp2pp2")
