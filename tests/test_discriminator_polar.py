"""The frozen scorer's "polar" input preset: exact token ids, exact scores, and its refusals.

A tiny word-level tokenizer (with <s>, <|reward|> and [UNUSED_TOKEN_130] as special tokens) and a
tiny random Llama sequence classifier are made on the fly, so every id below is known by hand.
"""

import json
import shutil

import pytest
import torch

from megatron_uniapl.config.discriminator import FrozenScorerConfig
from megatron_uniapl.discriminator.frozen import FrozenRewardModel
from megatron_uniapl.discriminator.polar_format import encode_triples, truncate

WORDS = ["<unk>", "<pad>", "<s>", "\n", "what", "is", "the", "capital", "of", "china", "?", "beijing",
         "shanghai", ".", "say", "hi", "hello", "there", "count", "to", "three", "one", "two", "!"]
VOCAB = {w: i for i, w in enumerate(WORDS)}
REWARD_ID = len(WORDS)  # the added special tokens follow the word vocabulary
SCORE_ID = len(WORDS) + 1
VOCAB.update({"<|reward|>": REWARD_ID, "[UNUSED_TOKEN_130]": SCORE_ID})

PROMPTS = ["what is the capital of china ?", "say hi", "count to three", "say hi"]
REFERENCES = ["beijing .", "hi !", "one two three", "hello"]
RESPONSES = ["shanghai .", "hello there !", "one two", "hi hi hi hi hi hi hi"]


def polar_tokens(prompt: str, reference: str, response: str) -> list[str]:
    """POLAR's layout written out token by token, independently of the code under test."""
    p = prompt.split()
    return ["<s>", *p, "\n", *reference.split(), "<|reward|>", *p, "\n", *response.split(), "[UNUSED_TOKEN_130]"]


def save_tokenizer(out, *, specials=True, bos=True):
    from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    # "\n" is a token of its own; words are separated by spaces.
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split("\n", "isolated"), pre_tokenizers.Split(" ", "removed")]
    )
    if specials:
        tok.add_special_tokens([AddedToken("<|reward|>", special=True),
                                AddedToken("[UNUSED_TOKEN_130]", special=True)])
    extra = {"bos_token": "<s>"} if bos else {}
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", **extra).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from transformers import LlamaConfig, LlamaForSequenceClassification

    out = tmp_path_factory.mktemp("tiny_polar_rm")
    config = LlamaConfig(vocab_size=len(VOCAB), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, num_labels=1,
                         pad_token_id=VOCAB["<pad>"], bos_token_id=VOCAB["<s>"], eos_token_id=None)
    torch.manual_seed(0)
    model = LlamaForSequenceClassification(config)
    with torch.no_grad():  # a wider spread than the default init, so scores differ visibly
        for name, p in model.named_parameters():
            p.copy_(1.0 + 0.1 * torch.randn_like(p)) if name.endswith("norm.weight") else p.normal_(0.0, 0.2)
    model.save_pretrained(out)
    return save_tokenizer(out)


def polar(checkpoint, **fields) -> FrozenScorerConfig:
    return FrozenScorerConfig(path=str(checkpoint), preset="polar", device="cpu", **fields)


def test_polar_rendering_gives_exact_ids(checkpoint):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    ids = encode_triples(tokenizer, polar(checkpoint).layout(), PROMPTS[:1], REFERENCES[:1], RESPONSES[:1])
    # <s> what is the capital of china ? \n beijing . <|reward|> (same prompt) \n shanghai . [UNUSED_TOKEN_130]
    assert ids == [[2, 4, 5, 6, 7, 8, 9, 10, 3, 11, 13, 24, 4, 5, 6, 7, 8, 9, 10, 3, 12, 13, 25]]
    assert (REWARD_ID, SCORE_ID) == (24, 25)
    # The overrides: no BOS, no joiner (POLAR's "pretrain" wrapper), no final token.
    bare = polar(checkpoint, add_bos=False, joiner="", score_token="").layout()
    # The parts are concatenated as they are: "say hi " + "!" <|reward|> "say hi " + "hello".
    assert encode_triples(tokenizer, bare, ["say hi "], ["!"], ["hello"]) == [[14, 15, 23, 24, 14, 15, 16]]


def test_polar_batched_scores_equal_the_model_on_the_exact_ids(checkpoint):
    from transformers import AutoModelForSequenceClassification

    scorer = FrozenRewardModel(polar(checkpoint, batch_size=2))
    scores = scorer.score(PROMPTS, REFERENCES, RESPONSES)

    model = AutoModelForSequenceClassification.from_pretrained(checkpoint, dtype=torch.float32).eval()
    expected = []
    with torch.no_grad():
        for triple in zip(PROMPTS, REFERENCES, RESPONSES):
            ids = torch.tensor([[VOCAB[t] for t in polar_tokens(*triple)]])
            expected.append(model(input_ids=ids).logits[0, 0].item())
    assert len({len(polar_tokens(*t)) for t in zip(PROMPTS, REFERENCES, RESPONSES)}) == 4  # all lengths differ
    assert scores == pytest.approx(expected, abs=1e-6)
    assert max(scores) - min(scores) > 1e-2  # not a comparison of near-identical numbers


def test_polar_truncation_keeps_the_bos_and_the_end(checkpoint):
    assert truncate([2, 5, 6, 7, 8], 3, "left", keep_first=True) == [2, 7, 8]
    assert truncate([2, 5, 6, 7, 8], 3, "right", keep_first=True) == [2, 5, 6]
    assert truncate([2, 5, 6, 7, 8], 3, "left", keep_first=False) == [6, 7, 8]
    assert truncate([2, 5], 3, "left", keep_first=True) == [2, 5]
    assert truncate([2, 5, 6], 1, "left", keep_first=True) == [2]

    from transformers import AutoModelForSequenceClassification

    short = FrozenRewardModel(polar(checkpoint, max_length=8))
    full = [VOCAB[t] for t in polar_tokens(PROMPTS[0], REFERENCES[0], RESPONSES[0])]
    model = AutoModelForSequenceClassification.from_pretrained(checkpoint, dtype=torch.float32).eval()
    with torch.no_grad():
        expected = model(input_ids=torch.tensor([full[:1] + full[-7:]])).logits[0, 0].item()
    assert short.score(PROMPTS[:1], REFERENCES[:1], RESPONSES[:1]) == pytest.approx([expected], abs=1e-6)


def test_custom_preset_scores_equal_the_tokenizer_batched_path_exactly(checkpoint):
    """"custom" is the scorer as it was: the template, no special tokens, tokenizer-side padding."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    template = "{prompt} \n {reference} \n {response}"
    config = FrozenScorerConfig(path=str(checkpoint), template=template, batch_size=2, max_length=12, device="cpu")
    scores = FrozenRewardModel(config).score(PROMPTS, REFERENCES, RESPONSES)

    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    tokenizer.padding_side, tokenizer.truncation_side = "right", "left"
    model = AutoModelForSequenceClassification.from_pretrained(checkpoint, dtype=torch.float32).eval()
    texts = [template.format(prompt=p, reference=r, response=y) for p, r, y in zip(PROMPTS, REFERENCES, RESPONSES)]
    order = sorted(range(len(texts)), key=lambda i: len(tokenizer(texts[i], add_special_tokens=False)["input_ids"]))
    expected = [0.0] * len(texts)
    with torch.no_grad():
        for start in range(0, len(order), 2):
            chunk = order[start : start + 2]
            batch = tokenizer([texts[i] for i in chunk], add_special_tokens=False, padding=True, truncation=True,
                              max_length=12, return_tensors="pt")
            for i, v in zip(chunk, model(**batch).logits[:, 0].tolist()):
                expected[i] = v
    assert scores == expected  # bit for bit, truncation included (the first triple has 13 tokens)


def test_preset_fields_are_validated():
    with pytest.raises(ValueError, match=r"discriminator.frozen.preset is 'polr'; choose one of \['custom', 'polar'\]"):
        FrozenScorerConfig(path="x", preset="polr").validate()
    with pytest.raises(ValueError, match=r"discriminator.frozen.template is not used by .*preset='polar'"):
        FrozenScorerConfig(path="x", preset="polar", template="{prompt}{response}").validate()
    with pytest.raises(ValueError, match=r"discriminator.frozen.reward_token is only read by .*preset='polar'"):
        FrozenScorerConfig(path="x", reward_token="<|reward|>").validate()
    with pytest.raises(ValueError, match=r"discriminator.frozen.truncation_side='right' would cut .*score_token"):
        FrozenScorerConfig(path="x", preset="polar", truncation_side="right").validate()
    FrozenScorerConfig(path="x", preset="polar", truncation_side="right", score_token="").validate()
    assert FrozenScorerConfig(path="x").trust_remote_code is False
    assert FrozenScorerConfig(path="x", preset="polar").trust_remote_code is False  # never the preset's doing
    layout = FrozenScorerConfig(path="x", preset="polar", add_bos=False).layout()
    assert (layout.add_bos, layout.joiner, layout.reward_token, layout.score_token) == (
        False, "\n", "<|reward|>", "[UNUSED_TOKEN_130]")


def test_tokens_missing_from_the_vocabulary_are_refused(checkpoint, tmp_path):
    with pytest.raises(ValueError, match=rf"{checkpoint}: '<\|missing\|>' is not in the tokenizer's "
                                         rf"vocabulary; set discriminator.frozen.reward_token"):
        FrozenRewardModel(polar(checkpoint, reward_token="<|missing|>"))
    plain = save_tokenizer(tmp_path / "plain", specials=False, bos=False)
    with pytest.raises(ValueError, match=rf"{plain}: the tokenizer defines no BOS token, but "
                                         rf"discriminator.frozen.add_bos is on"):
        FrozenRewardModel(polar(checkpoint, tokenizer_path=str(plain)))
    with pytest.raises(ValueError, match=rf"{plain}: '\[UNUSED_TOKEN_130\]' is not in .*discriminator.frozen.score_token"):
        FrozenRewardModel(polar(checkpoint, tokenizer_path=str(plain), add_bos=False, reward_token=""))


def test_checkpoint_code_runs_only_with_trust_remote_code(checkpoint, tmp_path):
    remote = tmp_path / "remote"
    shutil.copytree(checkpoint, remote)
    config = json.loads((remote / "config.json").read_text())
    # A model type transformers does not know, served by code the checkpoint would ship.
    config["model_type"] = "uniapl_test_remote"
    config["auto_map"] = {"AutoConfig": "configuration_remote.RemoteConfig",
                          "AutoModelForSequenceClassification": "modeling_remote.RemoteModel"}
    (remote / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"ships its own code .*set discriminator.frozen.trust_remote_code=true"):
        FrozenRewardModel(polar(remote))
    # With the flag on, transformers goes on to import the (absent) code: the flag was passed.
    with pytest.raises(Exception) as err:
        FrozenRewardModel(polar(remote, trust_remote_code=True))
    assert "discriminator.frozen.trust_remote_code" not in str(err.value)
    assert "configuration_remote" in str(err.value)
