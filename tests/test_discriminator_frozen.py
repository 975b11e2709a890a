"""The frozen reward-model scorer gives what the transformers model gives on each text alone."""

import pytest
import torch

from megatron_uniapl.assets import TOKENIZER_FILES, qwen3_tokenizer_dir
from megatron_uniapl.config.discriminator import POLAR_LIKE_TEMPLATE, FrozenScorerConfig
from megatron_uniapl.discriminator.base import Discriminator, render
from megatron_uniapl.discriminator.frozen import FrozenRewardModel
from megatron_uniapl.model.tiny import tiny_qwen3_config

PROMPTS = [
    "Write a haiku about rain.",
    "List three primes.",
    "Say hi.",
    "Explain {braces} in Python.",
    "Count to five.",
]
REFERENCES = [
    "Soft rain on the roof\nwhispers to the sleeping town\nmorning comes washed clean",
    "2, 3, 5",
    "Hi!",
    "Braces {} delimit sets and dicts.",
    "1 2 3 4 5",
]
RESPONSES = [
    "Rain falls.",
    "2, 3 and 5.",
    "Hello there, how can I help you today?",
    "They make dicts.",
    "one two",
]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    import shutil

    from transformers import Qwen3ForSequenceClassification

    out = tmp_path_factory.mktemp("tiny_rm")
    torch.manual_seed(0)
    model = Qwen3ForSequenceClassification(tiny_qwen3_config(num_labels=1))
    with torch.no_grad():  # a wider spread than the default init, so scores differ visibly
        for name, p in model.named_parameters():
            p.copy_(1.0 + 0.1 * torch.randn_like(p)) if name.endswith("norm.weight") else p.normal_(0.0, 0.08)
    model.save_pretrained(out)
    for name in TOKENIZER_FILES:
        shutil.copyfile(qwen3_tokenizer_dir() / name, out / name)
    return out


def test_batched_scores_match_the_transformers_model_run_directly(checkpoint):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    scorer = FrozenRewardModel(FrozenScorerConfig(path=str(checkpoint), batch_size=2, device="cpu"))
    assert isinstance(scorer, Discriminator)
    scores = scorer.score(PROMPTS, REFERENCES, RESPONSES)

    model = AutoModelForSequenceClassification.from_pretrained(checkpoint).eval()
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    expected = []
    with torch.no_grad():
        for text in render(POLAR_LIKE_TEMPLATE, PROMPTS, REFERENCES, RESPONSES):
            ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
            expected.append(model(input_ids=ids).logits[0, 0].item())
    assert scores == pytest.approx(expected, abs=2e-5)
    assert max(scores) - min(scores) > 1e-2  # the comparison is not between near-identical numbers
    assert not any(p.requires_grad for p in scorer.model.parameters())


def test_template_and_inputs_are_checked(checkpoint):
    with pytest.raises(
        ValueError, match=r"discriminator.frozen.template uses unknown field\(s\) \['answer'\]"
    ):
        FrozenScorerConfig(path="x", template="{prompt} {answer}").validate()
    with pytest.raises(ValueError, match=r"lacks the field\(s\) \['response'\]"):
        FrozenScorerConfig(path="x", template="{prompt} {reference}").validate()
    scorer = FrozenRewardModel(FrozenScorerConfig(path=str(checkpoint), template="{response}", device="cpu"))
    with pytest.raises(ValueError, match=r"references\[1\] is NoneType"):
        scorer.score(["a", "b"], ["x", None], ["y", "z"])
    with pytest.raises(ValueError, match="2 prompts, 1 references"):
        scorer.score(["a", "b"], ["x"], ["y", "z"])
    # Left truncation keeps the response at the end: the score of a long input equals the score of
    # its last max_length tokens.
    short = FrozenRewardModel(
        FrozenScorerConfig(path=str(checkpoint), template="{prompt}{response}", max_length=8, device="cpu")
    )
    ids = short.tokenizer(
        "one two three four five six seven eight nine ten eleven", add_special_tokens=False
    )["input_ids"]
    tail = short.tokenizer.decode(ids[-8:])
    assert short.score(
        ["one two three four five six seven eight nine ten"], [""], [" eleven"]
    ) == pytest.approx(short.score([""], [""], [tail]), abs=1e-5)
