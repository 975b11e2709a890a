"""The tokenizer layer over the real Qwen3 tokenizer and over a SentencePiece model."""

import pytest

from megatron_uniapl.assets import qwen3_tokenizer_dir
from megatron_uniapl.tokenizer import check_vocab, load_tokenizer, render_qwen3_chat

# The documented Qwen3 non-thinking generation prompt (enable_thinking=False).
QWEN3_NO_THINK = "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"}]


@pytest.fixture(scope="module")
def qwen():
    return load_tokenizer(qwen3_tokenizer_dir())


def test_real_qwen3_tokenizer_basics(qwen):
    assert qwen.vocab_size == 151669
    assert qwen.eos_id == 151645 and qwen.pad_id == 151643
    ids = qwen.encode("Hello, world! Ünïcödé ✓")
    assert qwen.decode(ids) == "Hello, world! Ünïcödé ✓"


def test_chat_template_without_thinking_matches_documented_format(qwen):
    ids = qwen.apply_chat(MESSAGES, thinking=False)
    assert qwen.decode(ids, skip_special_tokens=False) == QWEN3_NO_THINK
    # Special tokens are single ids, not spelled out.
    assert ids[0] == 151644 and ids.count(151645) == 2
    # The fallback renderer (tokenizers without a template) produces the same text.
    assert render_qwen3_chat(MESSAGES, thinking=False) == QWEN3_NO_THINK


def test_thinking_mode_leaves_the_think_block_open(qwen):
    text = qwen.decode(qwen.apply_chat(MESSAGES, thinking=True), skip_special_tokens=False)
    assert text.endswith("<|im_start|>assistant\n") and "<think>" not in text


def test_sentencepiece_model(tmp_path):
    import sentencepiece as spm

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(f"the quick brown fox {i} jumps over the lazy dog" for i in range(200)))
    spm.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=str(tmp_path / "sp"), vocab_size=48,
        user_defined_symbols=["<|im_start|>", "<|im_end|>"], minloglevel=2,
    )
    tok = load_tokenizer(tmp_path / "sp.model")
    assert tok.vocab_size == 48
    assert tok.decode(tok.encode("the lazy dog")) == "the lazy dog"
    ids = tok.apply_chat([{"role": "user", "content": "the fox"}])
    assert tok.eos_id == tok._sp.piece_to_id("<|im_end|>") and tok.eos_id in ids
    assert tok.decode(ids).startswith("<|im_start|>user")


def test_unknown_role_and_missing_tokenizer(tmp_path):
    with pytest.raises(ValueError, match="message 0: role 'tool'"):
        render_qwen3_chat([{"role": "tool", "content": "x"}])
    with pytest.raises(FileNotFoundError, match="no tokenizer.json"):
        load_tokenizer(tmp_path)


def test_vocab_check():
    check_vocab(151669, 151936, "m")  # Qwen3's own padding is fine
    with pytest.raises(ValueError, match="would have no embedding"):
        check_vocab(151669, 151000, "m")
    with pytest.raises(ValueError, match="do not belong together"):
        check_vocab(32000, 151936, "m")
