"""Shared fixtures: tiny random Qwen3 checkpoints with the real tokenizer, written once per session."""

from __future__ import annotations

import os
import warnings

import pytest

# Megatron-Core and transformers are chatty on CPU (no Apex/TE/CUDA); the tests check results.
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
warnings.filterwarnings("ignore", category=UserWarning)


@pytest.fixture(scope="session")
def tiny_tied(tmp_path_factory):
    """A 2-layer tiny Qwen3 with tied embeddings (like Qwen3-0.6B..4B)."""
    from megatron_uniapl.model.tiny import create_tiny_qwen3

    return create_tiny_qwen3(tmp_path_factory.mktemp("tiny_tied"), seed=1, tie_word_embeddings=True)


@pytest.fixture(scope="session")
def tiny_untied(tmp_path_factory):
    """A 4-layer tiny Qwen3 with a separate output layer (like Qwen3-8B+)."""
    from megatron_uniapl.model.tiny import create_tiny_qwen3

    return create_tiny_qwen3(
        tmp_path_factory.mktemp("tiny_untied"), seed=2, tie_word_embeddings=False, num_hidden_layers=4
    )


@pytest.fixture
def megatron_world():
    """A single-process Megatron world (TP=1, PP=1) on the CPU for in-process tests. Rebuilt per
    test: model-parallel groups are cheap, and a test may have torn the world down."""
    from megatron_uniapl import parallel

    parallel.initialize(1, 1)
    yield
