"""The study task as shipped: its files, its splits, its teacher and its tokenizer (fast, no processes)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from megatron_uniapl.data.schemas import (
    read_demonstrations,
    read_eval_set,
    read_rl_prompts,
)
from megatron_uniapl.study import task
from megatron_uniapl.study.files import FILE_NAMES, render_files
from megatron_uniapl.study.task import (
    Constraint,
    Prompt,
    Surface,
    TaskConfig,
    compose,
    generate,
)

STUDY = Path(__file__).resolve().parents[1] / "recipes" / "study"
DATA = STUDY / "data"


@pytest.fixture(scope="module")
def data():
    return generate(TaskConfig())


def test_shipped_files_are_what_the_generator_writes(data):
    # The committed data is the generator's output byte for byte: a change to either shows here.
    for name, content in render_files(data, TaskConfig()).items():
        assert (DATA / name).read_text(encoding="utf-8") == content, name
    assert sorted(p.name for p in DATA.iterdir()) == sorted(FILE_NAMES)


def test_shipped_files_load_with_the_framework_readers():
    assert len(read_demonstrations(DATA / "demos.jsonl")) == 320
    assert len(read_rl_prompts(DATA / "rl_prompts.jsonl", require_reference="discriminator")) == 320
    assert len(read_eval_set(DATA / "eval.jsonl")) == 120
    assert len(read_demonstrations(DATA / "warm.jsonl")) == 2400


def test_eval_prompts_are_held_out_and_unseen_combinations_never_demonstrated():
    evals = read_eval_set(DATA / "eval.jsonl")
    train = ({d.prompt for d in read_demonstrations(DATA / "demos.jsonl")}
             | {p.prompt for p in read_rl_prompts(DATA / "rl_prompts.jsonl")})
    assert not [e.key for e in evals if e.prompt in train]
    combos = json.loads((DATA / "task.json").read_text())["combinations"]
    gen = generate(TaskConfig())
    demo_combos = {"+".join(p.combo) for p, _ in gen.demos}
    assert demo_combos == set(combos["single"]) | set(combos["seen_pair"])
    assert not demo_combos & (set(combos["unseen_pair"]) | set(combos["unseen_triple"]))
    rl_unseen = {"+".join(p.combo) for p, g, _ in gen.rl if g == "unseen"}
    assert rl_unseen and rl_unseen <= set(combos["unseen_pair"]) | set(combos["unseen_triple"])
    groups = json.loads((DATA / "eval_groups.json").read_text())
    assert sorted(groups.values()).count("unseen_triple") == 30 and len(groups) == 120


def test_every_ideal_answer_passes_and_the_teacher_is_imperfect(data):
    for p, _ in data.eval:
        assert task.passes(p, task.ideal_response(p)), p.key
    # 146 of 320 demonstrations meet every constraint (seeded draws; follow = 0.6 per constraint).
    assert sum(task.passes(p, a) for p, a in data.demos) == round(data.teacher_pass_rate * 320) == 146
    assert json.loads((DATA / "task.json").read_text())["teacher_demo_pass_rate"] == 0.4562


def test_compose_exact_answers():
    obj = ("amber", "orange", "stone")
    assert compose(obj, Surface(frozenset()), "teacher") == \
        "Certainly, the amber is an orange stone, and many people enjoy it."
    assert compose(obj, Surface(frozenset({"short", "lower"})), "teacher") == "certainly, the amber is an orange stone."
    assert compose(obj, Surface(frozenset({"long", "keyword", "ps", "end", "title", "upper", "quote"}),
                                "That is all.", "lovely"), "plain") == \
        '"<<THE AMBER>>\nTHE AMBER IS AN ORANGE STONE, AS YOU MAY KNOW. PEOPLE ALL OVER THE WORLD KNOW IT WELL ' \
        'AND LIKE TO TALK ABOUT IT. IT IS LOVELY. P.S. THANKS FOR ASKING. THAT IS ALL."'
    # `avoid` drops the keyword sentence.
    assert "lovely" not in compose(obj, Surface(frozenset({"keyword", "avoid"}), keyword="lovely"), "plain")


def test_no_single_answer_passes_most_prompts(data):
    # Exclusive pairs (case, keyword/avoid, short/long, the closing phrase) make the policy read
    # the request: the best fixed answer, over every feature set, passes under half the eval set.
    # No constraint depends on the object, so one object's answers stand for all, and each
    # (answer, constraint) verdict is computed once.
    import itertools

    from megatron_uniapl.rewards.registry import build_constraints
    from megatron_uniapl.rewards.reward import score

    constraints = {(c.instruction_id, json.dumps(c.kwargs, sort_keys=True)) for p, _ in data.eval for c in p.constraints}
    checks = {key: build_constraints([key[0]], [json.loads(key[1])], "x") for key in constraints}
    kinds = ("lower", "upper", "quote", "end", "title", "keyword", "ps", "short", "long")
    best = 0
    for style, end, r in itertools.product(("teacher", "plain"), task.END_PHRASES, range(len(kinds) + 1)):
        for ks in itertools.combinations(kinds, r):
            answer = compose(("lemon", "yellow", "fruit"), Surface(frozenset(ks), end, "famous"), style)
            ok = {key: score(check, answer) == 1.0 for key, check in checks.items()}
            passed = sum(all(ok[(c.instruction_id, json.dumps(c.kwargs, sort_keys=True))] for c in p.constraints)
                         for p, _ in data.eval)
            best = max(best, passed)
    assert best == 57, best  # 47.5% of 120: under half


@pytest.mark.parametrize("kind,arg,good,bad", [
    ("avoid", "famous", "The crow is a black bird.", "It is Famous."),
    ("end", "Hope this helps.", '"It is red. Hope this helps."', "Hope this helps. It is red."),
    ("short", "", "Certainly, the rose is a red flower.", "Certainly, the rose is a red flower, and many enjoy it."),
    ("long", "", " ".join(["word"] * 20), " ".join(["word"] * 19)),
    ("title", "", "<<The rose>>\nIt is red.", "The rose is red."),
    ("keyword", "famous", "It is FAMOUS.", "It is fame."),
])
def test_constraint_checkers_decide_the_task_as_documented(kind, arg, good, bad):
    p = Prompt(("x", "red", "bird"), (Constraint(kind, arg),))
    assert task.passes(p, good) and not task.passes(p, bad)


def test_generation_is_deterministic_and_seeded():
    a, b = generate(TaskConfig(seed=0, demos=40, rl_prompts=40, eval_per_group=5, warm=20)), \
        generate(TaskConfig(seed=0, demos=40, rl_prompts=40, eval_per_group=5, warm=20))
    c = generate(TaskConfig(seed=1, demos=40, rl_prompts=40, eval_per_group=5, warm=20))
    assert [p.text for p, _ in a.demos] == [p.text for p, _ in b.demos]
    assert [p.text for p, _ in a.demos] != [p.text for p, _ in c.demos]


def test_shipped_tokenizer_renders_qwen3_chats_and_round_trips_every_text():
    from megatron_uniapl.tokenizer import load_tokenizer, render_qwen3_chat

    tok = load_tokenizer(STUDY / "tokenizer")
    assert tok.vocab_size == 947 and tok.eos_id == 2 and tok.pad_id == 0
    chat = [{"role": "user", "content": "Describe the lime. Use only capital letters."}]
    assert tok.apply_chat(chat) == tok.encode(render_qwen3_chat(chat))
    assert tok.decode(tok.apply_chat(chat), skip_special_tokens=False) == render_qwen3_chat(chat)
    texts = [d.response for d in read_demonstrations(DATA / "demos.jsonl")] + ["ÜNSEEN 42 ~ text\twith tab"]
    for text in texts:
        assert tok.decode(tok.encode(text)) == text
    # Short sequences are the point of the small vocabulary: a teacher answer is ~15 tokens.
    assert max(len(tok.encode(t)) for t in texts[:-1]) <= 40


def test_warm_corpus_asks_for_nothing_and_meets_constraints_by_chance(data):
    # The corpus must not teach instruction following: no request carries a constraint, and an
    # answer meets an evaluation prompt's constraints only by chance (10-50% is the target).
    assert all(not p.constraints for p, _ in data.warm)
    answers = [a for _, a in data.warm]
    rate = sum(task.passes(p, answers[i]) for i, (p, _) in enumerate(data.eval)) / len(data.eval)
    assert 0.1 <= rate <= 0.5, rate
