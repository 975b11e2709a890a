"""Layer-spec selection errors, and the promise that the CPU support never touches a CUDA path."""

import subprocess
import sys

import pytest

from megatron_uniapl.config.model import ModelOptions
from megatron_uniapl.model.spec import resolve_spec, te_available


def test_auto_resolves_to_portable_without_te_or_gpu():
    assert resolve_spec(ModelOptions(spec="auto")) == "portable"


@pytest.mark.skipif(te_available(), reason="Transformer Engine is installed")
def test_te_and_fp8_without_transformer_engine_are_clear_errors():
    with pytest.raises(RuntimeError, match="Transformer Engine is not importable"):
        resolve_spec(ModelOptions(spec="te"))
    with pytest.raises(RuntimeError, match="fp8='e4m3' needs the Transformer Engine spec"):
        resolve_spec(ModelOptions(fp8="e4m3"))


def test_portable_spec_refuses_context_and_sequence_parallel():
    with pytest.raises(RuntimeError, match="context_parallel > 1 needs the Transformer Engine"):
        resolve_spec(ModelOptions(context_parallel=2))
    with pytest.raises(ValueError, match="sequence_parallel needs model.tensor_parallel > 1"):
        ModelOptions(sequence_parallel=True).validate()


def test_builder_checks_divisibility():
    from test_hf_config import QWEN3_4B

    from megatron_uniapl.model.builder import qwen3_transformer_config
    from megatron_uniapl.model.hf_config import parse_qwen3_config

    arch = parse_qwen3_config(QWEN3_4B)
    with pytest.raises(ValueError, match="tensor_parallel=16 must divide num_key_value_heads=8"):
        qwen3_transformer_config(arch, ModelOptions(tensor_parallel=16))
    with pytest.raises(ValueError, match="pipeline_parallel=5 must divide num_layers=36"):
        qwen3_transformer_config(arch, ModelOptions(pipeline_parallel=5))


def test_cpu_support_is_a_no_op_when_cuda_exists():
    """With CUDA reported available, enable() must patch nothing (run in a clean process)."""
    code = (
        "import torch; torch.cuda.is_available = lambda: True\n"
        "before = (torch.cuda.current_device, torch.cuda.synchronize)\n"
        "from megatron_uniapl import cpu_support\n"
        "assert cpu_support.enable() is False and not cpu_support.is_enabled()\n"
        "assert (torch.cuda.current_device, torch.cuda.synchronize) == before\n"
        "from torch.overrides import _get_current_function_mode_stack\n"
        "assert not _get_current_function_mode_stack()\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_cpu_rng_tracker_forks_like_cuda():
    import torch

    from megatron_uniapl.cpu_support import CPURNGStatesTracker

    tracker = CPURNGStatesTracker()
    tracker.add("model-parallel-rng", 7)
    torch.manual_seed(0)
    outer_first = torch.rand(1)
    torch.manual_seed(0)
    with tracker.fork():
        inside = torch.rand(2)
    assert torch.equal(torch.rand(1), outer_first), "the outer stream must be untouched by a fork"
    with tracker.fork():
        again = torch.rand(2)
    assert not torch.equal(inside, again), "a fork continues its own stream"
    assert torch.equal(inside, torch.rand(2, generator=torch.Generator().manual_seed(7))), "seeded by add()"
    with pytest.raises(RuntimeError, match="seed 7 already exists"):
        tracker.add("other", 7)
