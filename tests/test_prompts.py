"""Qwen3 chat templating with thinking disabled, against the documented Qwen3 prompt format."""

from __future__ import annotations

import pytest

from megatron_uniapl.rollout.prompts import (
    encode_prompt,
    encode_user_prompts,
    render_prompt,
)


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from megatron_uniapl.assets import qwen3_tokenizer_dir

    return AutoTokenizer.from_pretrained(qwen3_tokenizer_dir())


def test_render_matches_documented_qwen3_format(tokenizer):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"}]
    assert render_prompt(tokenizer, messages) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nHi there<|im_end|>\n"
        "<|im_start|>assistant\n<think>\n\n</think>\n\n"
    )


def test_encode_ids_are_the_template_tokens(tokenizer):
    ids = encode_prompt(tokenizer, [{"role": "user", "content": "Hi there"}])
    im_start, im_end, think, end_think = 151644, 151645, 151667, 151668
    assert ids[0] == im_start and ids.count(im_end) == 1
    assert ids[-4:] == [think, 271, end_think, 271]  # 271 is "\n\n"
    assert tokenizer.decode(ids) == render_prompt(tokenizer, [{"role": "user", "content": "Hi there"}])
    batch = encode_user_prompts(tokenizer, ["Hi there", "Bye"], system=None)
    assert batch[0] == ids and len(batch) == 2


def test_bad_messages_are_named(tokenizer):
    with pytest.raises(ValueError, match="message 1: role 'bot'"):
        render_prompt(tokenizer, [{"role": "user", "content": "a"}, {"role": "bot", "content": "b"}])
    with pytest.raises(ValueError, match="at least one message"):
        render_prompt(tokenizer, [])
