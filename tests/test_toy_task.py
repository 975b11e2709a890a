"""The toy instruction task: experts satisfy their prompts, wrong formats do not, splits are disjoint,
the shipped files are what the generator writes, and the framework's readers accept them."""

from __future__ import annotations

from pathlib import Path

from megatron_uniapl.data import toy_task
from megatron_uniapl.data.schemas import (
    read_demonstrations,
    read_eval_set,
    read_rl_prompts,
)
from megatron_uniapl.rewards.reward import score

SHIPPED = Path(__file__).resolve().parents[1] / "recipes" / "data"


def test_counts_and_disjoint_splits():
    n_words = sum(len(w) for w in toy_task.TOPICS.values())
    n_constraints = len(toy_task.constraints())
    assert n_constraints == 7
    pool = toy_task.examples()
    assert len(pool) == n_words * n_constraints == 32 * 7
    parts = toy_task.split(seed=0)
    assert [len(parts[k]) for k in ("demos", "rl", "eval")] == [92, 92, 40]
    ids = [set(e.id for e in parts[k]) for k in ("demos", "rl", "eval")]
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
    assert set().union(*ids) == {e.id for e in pool}
    assert [e.id for e in toy_task.split(seed=0)["eval"]] == [e.id for e in parts["eval"]]
    assert [e.id for e in toy_task.split(seed=1)["eval"]] != [e.id for e in parts["eval"]]


def test_expert_formats_by_hand():
    by_name = {c.name: c for c in toy_task.constraints()}
    s = "My favorite fruit is the mango and I like it very much."
    assert by_name["quote"].respond(s) == '"My favorite fruit is the mango and I like it very much."'
    assert by_name["lower"].respond(s) == "my favorite fruit is the mango and i like it very much."
    assert by_name["upper"].respond(s) == "MY FAVORITE FRUIT IS THE MANGO AND I LIKE IT VERY MUCH."
    assert by_name["quote_lower"].respond(s) == '"my favorite fruit is the mango and i like it very much."'
    assert by_name["end1"].respond(s) == "My favorite fruit is the mango and I like it very much. That is all."


def test_rewards_separate_expert_from_wrong_format(tmp_path):
    paths = toy_task.write(tmp_path, seed=0)
    prompts = read_rl_prompts(paths["rl"])
    plain = {c.name: 0 for c in toy_task.constraints()}
    for p in prompts:
        assert score(p, p.reference_response, "strict") == 1.0, p.key
        # The unformatted sentence (no quotes, mixed case, no end phrase) must score 0: the reward
        # carries signal only if the instruction changes what a correct answer looks like.
        topic, word, name = p.key.split("-")
        assert score(p, toy_task.SENTENCE.format(topic=topic, word=word), "strict") == 0.0, p.key
        plain[name] += 1
    assert all(v > 0 for v in plain.values())  # every constraint appears in the RL set
    # quote + lowercase: one of the two satisfied gives 0.5 under the fraction reward.
    both = next(p for p in prompts if p.key.endswith("quote_lower"))
    assert score(both, '"My favorite color is the red and I like it very much."', "strict_fraction") == 0.5


def test_shipped_files_are_current_and_load(tmp_path):
    paths = toy_task.write(tmp_path, seed=0)
    for name, path in paths.items():
        shipped = SHIPPED / path.name
        assert shipped.read_text() == path.read_text(), "regenerate: python -m megatron_uniapl.data.toy_task"
    demos = read_demonstrations(SHIPPED / "toy_demos.jsonl")
    assert len(demos) == 92 and all(d.response for d in demos)
    assert len(read_eval_set(SHIPPED / "toy_eval.jsonl")) == 40
    assert all(p.reference_response for p in read_rl_prompts(SHIPPED / "toy_rl_prompts.jsonl"))
