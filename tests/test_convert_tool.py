"""tools/convert_hf.py end to end (world of one process) and every user error it promises to name."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from megatron_uniapl.convert.mcore_checkpoint import META_NAME, ModelCheckpointMeta
from megatron_uniapl.convert.tool import main as convert


def hf_tensors(path):
    out = {}
    for f in sorted(path.glob("*.safetensors")):
        out.update(load_file(str(f)))
    return out


@pytest.fixture(scope="module")
def imported(tiny_tied, tmp_path_factory):
    out = tmp_path_factory.mktemp("conv") / "mcore"
    assert convert(["import", "--hf-dir", str(tiny_tied), "--out-dir", str(out)]) == 0
    return out


def test_import_writes_complete_checkpoint(imported, tiny_tied):
    meta = ModelCheckpointMeta.read(imported)
    assert meta.hf_config["model_type"] == "qwen3" and meta.dtype == "float32" and meta.has_tokenizer
    assert (imported / "hf" / "tokenizer.json").is_file()
    assert not list(imported.parent.glob("*.partial-*")), "staging directory left behind"


def test_export_round_trip_is_bit_exact(imported, tiny_tied, tmp_path):
    out = tmp_path / "hf2"
    assert convert(["export", "--mcore-dir", str(imported), "--out-dir", str(out), "--shard-gib", "0.02"]) == 0
    original, exported = hf_tensors(tiny_tied), hf_tensors(out)
    assert sorted(original) == sorted(exported)
    for name, tensor in original.items():
        assert exported[name].dtype == tensor.dtype and torch.equal(exported[name], tensor), name
    # Several shards were written (20 MiB limit), with an index transformers can follow.
    assert (out / "model.safetensors.index.json").is_file()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.tie_word_embeddings
    assert len(AutoTokenizer.from_pretrained(out)) == 151669


def test_verify_passes_and_fails(imported, tiny_tied, tiny_untied, capsys):
    assert convert(["verify", "--hf-dir", str(tiny_tied), "--mcore-dir", str(imported)]) == 0
    assert "OK" in capsys.readouterr().out
    # A different architecture is refused before any comparison.
    assert convert(["verify", "--hf-dir", str(tiny_untied), "--mcore-dir", str(imported)]) == 2
    assert "different architecture" in capsys.readouterr().err


def test_verify_detects_corrupted_weights(tiny_tied, tmp_path, capsys):
    corrupt = tmp_path / "corrupt"
    shutil.copytree(tiny_tied, corrupt)
    tensors = load_file(str(corrupt / "model.safetensors"))
    tensors["model.layers.1.mlp.down_proj.weight"] *= -1
    save_file(tensors, str(corrupt / "model.safetensors"))
    assert convert(["import", "--hf-dir", str(corrupt), "--out-dir", str(tmp_path / "m")]) == 0
    assert convert(["verify", "--hf-dir", str(tiny_tied), "--mcore-dir", str(tmp_path / "m")]) == 1
    assert "FAIL" in capsys.readouterr().out


def broken_copy(src, dst, edit_tensors=None, edit_config=None, drop_tokenizer=False):
    shutil.copytree(src, dst)
    if edit_tensors:
        tensors = load_file(str(dst / "model.safetensors"))
        edit_tensors(tensors)
        save_file(tensors, str(dst / "model.safetensors"))
    if edit_config:
        config = json.loads((dst / "config.json").read_text())
        edit_config(config)
        (dst / "config.json").write_text(json.dumps(config))
    if drop_tokenizer:
        for name in ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt"):
            (dst / name).unlink()
    return dst


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing", "missing tensor model.layers.1.self_attn.k_norm.weight"),
        ("extra", "unexpected tensor model.layers.0.mlp.extra.weight"),
        ("shape", "tensor model.layers.0.self_attn.o_proj.weight has shape [64, 64], expected [64, 128]"),
        ("not_qwen3", "only Qwen3 dense"),
        ("vocab", "the tokenizer has 151669 tokens but the model's vocab_size is 151000"),
    ],
)
def test_import_errors_name_the_tensor(case, message, tiny_tied, tmp_path, capsys):
    edits = {
        "missing": dict(edit_tensors=lambda t: t.pop("model.layers.1.self_attn.k_norm.weight")),
        "extra": dict(edit_tensors=lambda t: t.update({"model.layers.0.mlp.extra.weight": torch.zeros(2)})),
        "shape": dict(edit_tensors=lambda t: t.update(
            {"model.layers.0.self_attn.o_proj.weight": t["model.layers.0.self_attn.o_proj.weight"][:, :64].contiguous()})),
        "not_qwen3": dict(edit_config=lambda c: c.update(model_type="llama", architectures=["LlamaForCausalLM"])),
        "vocab": dict(
            edit_config=lambda c: c.update(vocab_size=151000),
            edit_tensors=lambda t: t.update({"model.embed_tokens.weight": t["model.embed_tokens.weight"][:151000].contiguous()}),
        ),
    }[case]
    src = broken_copy(tiny_tied, tmp_path / case, **edits)
    out = tmp_path / "out"
    assert convert(["import", "--hf-dir", str(src), "--out-dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert not out.exists(), "nothing may be written when validation fails"


def test_existing_checkpoint_is_refused_unless_overwrite(imported, tiny_tied, capsys):
    assert convert(["import", "--hf-dir", str(tiny_tied), "--out-dir", str(imported)]) == 2
    assert "already holds a checkpoint; pass --overwrite" in capsys.readouterr().err
    before = (imported / META_NAME).stat().st_mtime_ns
    assert convert(["import", "--hf-dir", str(tiny_tied), "--out-dir", str(imported), "--overwrite"]) == 0
    assert (imported / META_NAME).stat().st_mtime_ns != before
    assert not list(imported.parent.glob("*.old-*")) and not list(imported.parent.glob("*.partial-*"))


def test_no_tokenizer_still_converts_with_warning(tiny_tied, tmp_path, caplog):
    src = broken_copy(tiny_tied, tmp_path / "notok", drop_tokenizer=True)
    with caplog.at_level("WARNING"):
        assert convert(["import", "--hf-dir", str(src), "--out-dir", str(tmp_path / "m")]) == 0
    assert "tokenizer/vocabulary check was skipped" in caplog.text
    assert not ModelCheckpointMeta.read(tmp_path / "m").has_tokenizer


def test_interrupted_write_never_looks_complete(imported, tmp_path, capsys):
    """A staging directory (what a crash mid-import leaves) is not a checkpoint, and the
    published one is untouched by it."""
    partial = tmp_path / "mcore.partial-dead"
    shutil.copytree(imported, partial)
    (partial / META_NAME).unlink()  # a crash happens before the metadata, which is written last
    assert convert(["export", "--mcore-dir", str(partial), "--out-dir", str(tmp_path / "x")]) == 2
    assert f"no {META_NAME}; not a complete checkpoint" in capsys.readouterr().err


def test_a_transformer_engine_model_loads_a_converted_checkpoint(imported, tiny_tied, monkeypatch):
    """Transformer Engine's attention and norms carry `_extra_state` (FP8 metadata) where the
    portable spec's modules carry none (its linears do, as Megatron's own linears), so a converted
    checkpoint lacks those keys: the load keeps the modules' fresh state instead of failing. Without
    TE on a CPU, the portable attention and norms are given an extra state the way TE's have one,
    which makes Megatron's sharded state dict ask for `<module>._extra_state`."""
    from megatron_uniapl import parallel
    from megatron_uniapl.config.model import ModelOptions
    from megatron_uniapl.convert.mcore_checkpoint import IncompleteCheckpointError, load_model_weights
    from megatron_uniapl.convert.megatron_params import iter_hf_tensors
    from megatron_uniapl.model.builder import build_qwen3_model
    from megatron_uniapl.model.hf_config import load_qwen3_arch
    from megatron_uniapl.model.norm import RMSNorm
    from megatron_uniapl.model.sdpa_attention import SDPAttention

    parallel.initialize(1, 1)  # the conversion above tore its world of one down
    restored = []
    for cls in (RMSNorm, SDPAttention):  # TE 2.x: an empty uint8 tensor without FP8
        monkeypatch.setattr(cls, "get_extra_state", lambda self: torch.zeros(0, dtype=torch.uint8), raising=False)
        monkeypatch.setattr(cls, "set_extra_state", lambda self, value: restored.append(value), raising=False)
    arch = load_qwen3_arch(tiny_tied)
    model = build_qwen3_model(arch, ModelOptions(dtype="float32", spec="portable"))
    asked = [k for k in model.sharded_state_dict() if "layernorm._extra_state" in k or "core_attention._extra" in k]
    assert len(asked) == 5 * arch.num_layers + 1  # per layer: 4 norms and the attention; the final norm
    load_model_weights([model], imported / "weights")
    assert restored == []  # nothing stored for them: they keep their own state
    original = hf_tensors(tiny_tied)
    for name, tensor in iter_hf_tensors(model, arch):
        assert torch.equal(tensor, original[name]), name
    # A real parameter missing from the checkpoint is still an error that names it.
    model.decoder.final_layernorm.register_parameter("bias", torch.nn.Parameter(torch.zeros(arch.hidden_size)))
    with pytest.raises(IncompleteCheckpointError, match="decoder.final_layernorm.bias"):
        load_model_weights([model], imported / "weights")
