"""Every prompt the builder may write is satisfiable, shown by witnesses that pass the real
checkers: for every pair of types the conflict table allows (three kwargs draws each) and for a
seeded sample of triples. What is refused is refused for its stated reason, and the refusals
that are checker-impossible have no witness at all."""

from __future__ import annotations

import itertools
import random
from collections import Counter

import pytest

from megatron_uniapl.dataprep import builder, conflicts, witness
from megatron_uniapl.dataprep.catalog import SPECS
from megatron_uniapl.rewards.registry import build_constraints
from megatron_uniapl.rewards.verify import follow_list

INSTRUCTION = "Write a short story about a lighthouse keeper who finds a message in a bottle."
TYPES = sorted(SPECS)
DRAWS_PER_PAIR = 3
TRIPLES = 400


def passes(pairs, response: str) -> bool:
    constraints = build_constraints([i for i, _ in pairs], [dict(k) for _, k in pairs], "test")
    return all(follow_list(constraints, response))


class Tally:
    """Draws tried: refused by a value rule (counted by reason), witnessed, or failed."""

    def __init__(self) -> None:
        self.checked, self.refused, self.failed = 0, Counter(), []

    def add(self, pairs) -> None:
        why = conflicts.value_conflict(pairs)
        if why:
            self.refused[why[0]] += 1
            return
        proof = witness.build(pairs)
        self.checked += 1
        if proof is None or not passes(pairs, proof):
            self.failed.append(pairs)


def test_conflict_table():
    assert conflicts.table_size() == 23
    for pair, why in conflicts.CONFLICTING_TYPES.items():
        assert len(pair) == 2 and pair <= set(SPECS) and why
    allowed = [p for p in itertools.combinations(TYPES, 2) if not conflicts.type_conflict(*p)]
    assert len(allowed) == 300 - 23
    assert conflicts.type_conflict("startend:quotation", "startend:quotation")


def test_every_allowed_pair_has_a_witness():
    tally = Tally()
    for a, b in itertools.combinations(TYPES, 2):
        if conflicts.type_conflict(a, b):
            continue
        for draw in range(DRAWS_PER_PAIR):
            rng = random.Random(f"{a}|{b}|{draw}")
            tally.add([(a, SPECS[a].sample(rng, INSTRUCTION)), (b, SPECS[b].sample(rng, INSTRUCTION))])
    assert tally.failed == []
    assert tally.checked == 277 * DRAWS_PER_PAIR - sum(tally.refused.values())
    assert dict(tally.refused) == {"case": 9, "script": 1}


def test_sampled_triples_have_witnesses():
    rng = random.Random(7)
    tally = Tally()
    while tally.checked + sum(tally.refused.values()) < TRIPLES:
        triple = rng.sample(TYPES, 3)
        if any(conflicts.type_conflict(a, b) for a, b in itertools.combinations(triple, 2)):
            continue
        tally.add([(t, SPECS[t].sample(rng, INSTRUCTION)) for t in triple])
    assert tally.failed == []
    assert (tally.checked, dict(tally.refused)) == (384, {"case": 11, "script": 4, "repeat": 1})


@pytest.mark.parametrize("pair", [("change_case:english_capital", "change_case:english_lowercase"),
                                  ("combination:two_responses", "length_constraints:number_paragraphs")])
def test_checker_impossible_pairs_have_no_witness(pair):
    rng = random.Random(0)
    pairs = [(t, SPECS[t].sample(rng, INSTRUCTION)) for t in pair]
    assert witness.build(pairs) is None


def test_the_sampler_never_combines_a_conflicting_pair():
    for pair in conflicts.CONFLICTING_TYPES:
        weights = {t: (1.0 if t in pair else 0.0) for t in SPECS}
        config = builder.BuilderConfig(min_constraints=2, max_constraints=2, weights=weights, max_attempts=5)
        refused: Counter = Counter()
        assert builder.draw(INSTRUCTION, random.Random(0), config, refused) is None
        assert refused == {"types": 5, "no_draw": 1}


def kw(iid, **values):
    return (iid, values)


WORDS_LT = lambda n: kw("length_constraints:number_words", relation="less than", num_words=n)  # noqa: E731


@pytest.mark.parametrize("pairs, rule", [
    # the example: fewer words than paragraphs need
    ([WORDS_LT(3), kw("length_constraints:number_paragraphs", num_paragraphs=5)], "word_budget"),
    ([kw("change_case:capital_word_frequency", capital_relation="at least", capital_frequency=2),
      kw("change_case:english_lowercase")], "case"),
    ([kw("change_case:capital_word_frequency", capital_relation="less than", capital_frequency=3),
      kw("change_case:english_capital")], "case"),
    ([kw("detectable_format:multiple_sections", section_spliter="SECTION", num_sections=2),
      kw("change_case:english_lowercase")], "case"),
    ([kw("change_case:capital_word_frequency", capital_relation="at least", capital_frequency=1),
      kw("language:response_language", language="hi")], "script"),
    ([kw("keywords:letter_frequency", letter="q", let_relation="less than", let_frequency=3),
      kw("language:response_language", language="de")], "script"),
    ([kw("combination:repeat_prompt", prompt_to_repeat=INSTRUCTION),
      kw("length_constraints:nth_paragraph_first_word", num_paragraphs=2, nth_paragraph=1, first_word="today")],
     "repeat"),
    ([kw("keywords:existence", keywords=["lantern"]), kw("keywords:forbidden_words", forbidden_words=["lantern"])],
     "forced_text"),
    ([kw("combination:repeat_prompt", prompt_to_repeat="Hello, world."), kw("punctuation:no_comma")],
     "forced_text"),
    ([kw("startend:end_checker", end_phrase="Any other questions?"),
      kw("keywords:letter_frequency", letter="q", let_relation="less than", let_frequency=1)], "forced_text"),
    ([kw("keywords:frequency", keyword="lantern", relation="less than", frequency=2),
      kw("keywords:existence", keywords=["lantern"]), kw("combination:repeat_prompt", prompt_to_repeat="A lantern.")],
     "forced_text"),
    ([kw("change_case:capital_word_frequency", capital_relation="less than", capital_frequency=2),
      kw("detectable_format:multiple_sections", section_spliter="PART", num_sections=2)], "forced_text"),
    ([kw("length_constraints:number_sentences", relation="less than", num_sentences=3),
      kw("startend:end_checker", end_phrase="Hope this helps."),
      kw("detectable_content:postscript", postscript_marker="P.S.")],
     "sentence_budget"),
])
def test_value_conflicts(pairs, rule):
    assert conflicts.value_conflict(pairs)[0] == rule
    # These refusals are real: no witness exists. The script rule is semantic (capital words or
    # letter counts would have to come from English words inside, say, a Hindi answer) and the
    # sentence budget a conservative bound; both may refuse a combination a checker would pass.
    if rule not in ("script", "sentence_budget"):
        assert witness.build(pairs) is None


def test_just_enough_words_is_allowed_and_witnessed():
    paragraphs = kw("length_constraints:number_paragraphs", num_paragraphs=5)
    assert conflicts.value_conflict([WORDS_LT(44), paragraphs])[0] == "word_budget"  # 24 + 4 * 5
    pairs = [WORDS_LT(45), paragraphs]
    assert conflicts.value_conflict(pairs) is None
    assert passes(pairs, witness.build(pairs))


def test_witnesses_by_hand():
    assert witness.build([kw("startend:quotation"), kw("change_case:english_lowercase")]) == (
        '"the river bends slowly past the old mill. most travellers stop there for bread and tea."')
    end = kw("startend:end_checker", end_phrase="Hope this helps.")
    assert witness.build([kw("detectable_format:title"), end]) == (
        "<<In spring the>>\nThe river bends slowly past the old mill. Most travellers stop there for bread and "
        "tea.\nHope this helps.")
    json_answer = witness.build([kw("detectable_format:json_format"), kw("keywords:existence", keywords=["tulip"])])
    assert json_answer == ('{"answer": "The river bends slowly past the old mill. Most travellers stop there for '
                           'bread and tea tulip."}')
    assert witness.build([kw("length_constraints:number_paragraphs", num_paragraphs=2),
                          kw("combination:repeat_prompt", prompt_to_repeat="Say hi.")]) == (
        "Say hi.\nThe river bends slowly past the old mill. Most travellers stop there for bread and tea."
        "\n***\nIn spring the fields turn a bright shade of green.")
