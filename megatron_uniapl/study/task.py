"""The study task: short answers about named objects under 1-3 verifiable constraints.

The CPU demo's toy task cannot tell the methods apart (a random model passes nothing, so GRPO has
no signal, and one template saturates every method with SFT). This task is built so that each
ingredient of UniAPL has something to do:

- Every prompt names an object ("Describe the banana.") that has one correct fact (a yellow
  fruit): the content every answer needs, and what the discriminator compares.
- 1-3 constraints from ten IFEval types (table below) are added as sentences of the prompt.
- The **teacher is imperfect and distinctive**: its answers have a style of their own ("Certainly,
  the banana is a yellow fruit, and many people enjoy it.") and apply each constraint only with
  probability `TeacherConfig.follow`, so imitation alone tops out below what the checkers allow,
  while verifiable rewards can go past the teacher.
- RL prompts include constraint **combinations the demonstrations never show**, and the
  evaluation set holds (object, combination) pairs seen in no training file, its prompt texts
  checked disjoint from both training files (`check_disjoint`).
- A **warm-start corpus** (`warm_record`) of requests without constraints, answered mostly in a
  plain style of its own (a quarter in the teacher's manner) with the same surface features
  drawn at random: a model trained on it knows the facts and meets some constraints by chance,
  so GRPO has signal from step 1, and has never been taught what the instructions mean.

    type        IFEval id                                  the teacher, when it complies
    lower       change_case:english_lowercase              lower-cases everything
    upper       change_case:english_capital                upper-cases everything
    quote       startend:quotation                         wraps the answer in double quotes
    end         startend:end_checker                       ends with the phrase asked for (one of two)
    title       detectable_format:title                    starts with <<The object>>
    keyword     keywords:existence                         adds "It is <keyword>."
    avoid       keywords:forbidden_words                   writes no "It is <keyword>." for that keyword
    ps          detectable_content:postscript              adds "P.S. Thanks for asking."
    short       length_constraints:number_words < 10       drops its closing clause (7 words)
    long        length_constraints:number_words >= 20      adds a sentence of 14 words

Half of the types come in exclusive pairs (lower/upper, keyword/avoid, short/long, the two
closing phrases), so no single answer passes every prompt: a policy must read the request. (A
first version had mostly additive types, and GRPO found one padded answer that met nearly all
of them whatever the prompt asked.)

All generation is a pure function of `TaskConfig` (one seeded `random.Random` per purpose), so
the files are identical on every machine.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, field

from megatron_uniapl.rewards.registry import build_constraints
from megatron_uniapl.rewards.reward import score

OBJECTS: tuple[tuple[str, str, str], ...] = (
    ("banana", "yellow", "fruit"), ("cherry", "red", "fruit"), ("lime", "green", "fruit"),
    ("plum", "purple", "fruit"), ("lemon", "yellow", "fruit"), ("grape", "purple", "fruit"),
    ("tomato", "red", "vegetable"), ("carrot", "orange", "vegetable"), ("pea", "green", "vegetable"),
    ("beet", "purple", "vegetable"), ("pumpkin", "orange", "vegetable"), ("leek", "green", "vegetable"),
    ("crow", "black", "bird"), ("swan", "white", "bird"), ("robin", "brown", "bird"),
    ("canary", "yellow", "bird"), ("flamingo", "pink", "bird"), ("parrot", "green", "bird"),
    ("ruby", "red", "stone"), ("emerald", "green", "stone"), ("sapphire", "blue", "stone"),
    ("pearl", "white", "stone"), ("onyx", "black", "stone"), ("amber", "orange", "stone"),
    ("taxi", "yellow", "vehicle"), ("tractor", "green", "vehicle"), ("ambulance", "white", "vehicle"),
    ("firetruck", "red", "vehicle"), ("limousine", "black", "vehicle"), ("tram", "blue", "vehicle"),
    ("rose", "red", "flower"), ("lily", "white", "flower"), ("violet", "purple", "flower"),
    ("daisy", "white", "flower"), ("sunflower", "yellow", "flower"), ("tulip", "pink", "flower"),
)
"""(object, colour, topic): the one fact each prompt's answer must state."""

TYPES: tuple[str, ...] = ("lower", "upper", "quote", "end", "title", "keyword", "avoid", "ps", "short", "long")
"""The constraint types, by short name (module table)."""

INSTRUCTION_IDS: dict[str, str] = {
    "lower": "change_case:english_lowercase",
    "upper": "change_case:english_capital",
    "quote": "startend:quotation",
    "end": "startend:end_checker",
    "title": "detectable_format:title",
    "keyword": "keywords:existence",
    "avoid": "keywords:forbidden_words",
    "ps": "detectable_content:postscript",
    "short": "length_constraints:number_words",
    "long": "length_constraints:number_words",
}
"""Short name -> IFEval instruction id (the checker that scores it)."""

CONFLICTS: frozenset[frozenset[str]] = frozenset(
    {frozenset(p) for p in (("lower", "upper"), ("keyword", "avoid"), ("short", "long"), ("short", "title"),
                            ("short", "keyword"), ("short", "ps"), ("short", "end"))})
"""Type pairs never drawn in one prompt: exclusive by definition, or (short with an addition) an
answer under 10 words cannot hold both."""
SHORT_WORDS, LONG_WORDS = 10, 20
"""The length constraints: fewer than SHORT_WORDS words, at least LONG_WORDS words."""
LONG_SENTENCE = "People all over the world know it well and like to talk about it."

END_PHRASES = ("That is all.", "Hope this helps.")
"""Phrases of the `end` constraint."""
KEYWORDS = ("famous", "bright", "simple", "lovely")
"""Keywords of the `keyword` constraint (none is an object, colour or topic)."""
POSTSCRIPT = "P.S. Thanks for asking."


@dataclass(frozen=True)
class Constraint:
    """One constraint of a prompt: its type and arguments."""

    kind: str
    """Short type name (`TYPES`)."""
    arg: str = ""
    """The end phrase, or the keyword to include or avoid; empty for the other types."""

    @property
    def instruction_id(self) -> str:
        return INSTRUCTION_IDS[self.kind]

    @property
    def kwargs(self) -> dict:
        """The checker's keyword arguments."""
        if self.kind == "end":
            return {"end_phrase": self.arg}
        if self.kind == "keyword":
            return {"keywords": [self.arg]}
        if self.kind == "avoid":
            return {"forbidden_words": [self.arg]}
        if self.kind == "ps":
            return {"postscript_marker": "P.S."}
        if self.kind == "short":
            return {"num_words": SHORT_WORDS, "relation": "less than"}
        if self.kind == "long":
            return {"num_words": LONG_WORDS, "relation": "at least"}
        return {}

    @property
    def sentence(self) -> str:
        """How the prompt asks for it."""
        return {
            "lower": "Use only lowercase letters.",
            "upper": "Use only capital letters.",
            "quote": "Wrap your whole answer in double quotes.",
            "end": f"End your answer with the exact phrase '{self.arg}'.",
            "title": "Give your answer a title in double angular brackets, like <<title>>.",
            "keyword": f"Include the keyword '{self.arg}'.",
            "avoid": f"Do not use the word '{self.arg}'.",
            "ps": "Add a postscript starting with P.S. at the end.",
            "short": f"Answer in fewer than {SHORT_WORDS} words.",
            "long": f"Answer in at least {LONG_WORDS} words.",
        }[self.kind]


@dataclass(frozen=True)
class Prompt:
    """One (object, constraints) request."""

    obj: tuple[str, str, str]
    """(object, colour, topic) from `OBJECTS`."""
    constraints: tuple[Constraint, ...]
    """What it asks for, in the order the sentences appear."""

    @property
    def combo(self) -> tuple[str, ...]:
        """The sorted constraint types: what "a combination" means in the splits."""
        return tuple(sorted(c.kind for c in self.constraints))

    @property
    def text(self) -> str:
        return " ".join([f"Describe the {self.obj[0]}."] + [c.sentence for c in self.constraints])

    @property
    def key(self) -> str:
        return "-".join([self.obj[0]] + [c.kind + (f"={c.arg}" if c.arg else "") for c in self.constraints])


@dataclass(frozen=True)
class Surface:
    """Which surface features an answer carries (the teacher's compliance, or warm-start noise)."""

    kinds: frozenset[str]
    """Types applied."""
    end_phrase: str = END_PHRASES[0]
    keyword: str = KEYWORDS[0]


def compose(obj: tuple[str, str, str], surface: Surface, style: str) -> str:
    """An answer about `obj` in `style` ("teacher" or "plain") with `surface`'s features.

    Order matters for the checkers: the body (short or full), then the additions at the end (long
    sentence, keyword sentence, postscript, end phrase, so the end phrase is last), then case,
    then quotes. `avoid` only matters by what is left out: no keyword sentence is added."""
    name, colour, topic = obj
    k = surface.kinds
    article = "an" if colour[0] in "aeiou" else "a"
    fact = f"the {name} is {article} {colour} {topic}"
    if style == "teacher":
        body = f"Certainly, {fact}." if "short" in k else f"Certainly, {fact}, and many people enjoy it."
    else:
        body = f"{fact[0].upper()}{fact[1:]}." if "short" in k else f"{fact[0].upper()}{fact[1:]}, as you may know."
    parts = [body]
    if "long" in k:
        parts.append(LONG_SENTENCE)
    if "keyword" in k and "avoid" not in k:
        parts.append(f"It is {surface.keyword}.")
    if "ps" in k:
        parts.append(POSTSCRIPT)
    if "end" in k:
        parts.append(surface.end_phrase)
    text = " ".join(parts)
    if "title" in k:
        text = f"<<The {name}>>\n{text}"
    if "lower" in k:
        text = text.lower()
    elif "upper" in k:
        text = text.upper()
    if "quote" in k:
        text = f'"{text}"'
    return text


def ideal_response(prompt: Prompt, style: str = "teacher") -> str:
    """The answer that meets every constraint of `prompt`."""
    return compose(prompt.obj, _surface_for(prompt, {c.kind for c in prompt.constraints}), style)


def _surface_for(prompt: Prompt, kinds: set[str]) -> Surface:
    args = {c.kind: c.arg for c in prompt.constraints}
    return Surface(frozenset(kinds), end_phrase=args.get("end", END_PHRASES[0]),
                   keyword=args.get("keyword", KEYWORDS[0]))


def passes(prompt: Prompt, response: str) -> bool:
    """Prompt-level strict verdict of `response` by the reward checkers."""
    checks = build_constraints([c.instruction_id for c in prompt.constraints],
                               [c.kwargs for c in prompt.constraints], prompt.key)
    return score(checks, response) == 1.0


@dataclass(frozen=True)
class TeacherConfig:
    """The imperfect teacher."""

    follow: float = 0.6
    """Probability that it applies each constraint of a prompt (independently)."""


@dataclass(frozen=True)
class TaskConfig:
    """Sizes and seed of the generated study data."""

    seed: int = 0
    """Seed of every draw (splits, arguments, teacher compliance, warm-start noise)."""
    seen_pairs: int = 12
    """Constraint pairs that the demonstrations show (with all ten single types)."""
    demos: int = 320
    """Demonstrations (teacher answers to prompts of seen combinations)."""
    rl_prompts: int = 320
    """RL prompts: half seen combinations, half combinations no demonstration shows."""
    eval_per_group: int = 30
    """Evaluation prompts per group: seen singles, seen pairs, unseen pairs, unseen triples."""
    warm: int = 2400
    """Warm-start corpus records."""
    warm_feature_p: float = 0.5
    """Probability of each surface feature in a warm-start answer (independent of the prompt)."""
    warm_teacher_style: float = 0.25
    """Fraction of warm-start answers in the teacher's manner: a pretrained model has seen such
    phrasing, so imitation is a shift of preference, not new words learned in a few steps."""
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    """The teacher's compliance."""


def _constraint(kind: str, obj: tuple[str, str, str], rng: random.Random) -> Constraint:
    if kind == "end":
        return Constraint(kind, rng.choice(END_PHRASES))
    if kind == "keyword":
        return Constraint(kind, rng.choice(KEYWORDS))
    if kind == "avoid":
        return Constraint(kind, rng.choice(KEYWORDS))
    return Constraint(kind)


def _valid(combo: tuple[str, ...]) -> bool:
    return not any(frozenset(p) in CONFLICTS for p in itertools.combinations(combo, 2))


def combinations(seed: int, seen_pairs: int) -> dict[str, list[tuple[str, ...]]]:
    """Constraint combinations by group: "single" (all seen), "seen_pair", "unseen_pair" and
    "unseen_triple" (neither ever in a demonstration)."""
    pairs = [c for c in itertools.combinations(sorted(TYPES), 2) if _valid(c)]
    triples = [c for c in itertools.combinations(sorted(TYPES), 3) if _valid(c)]
    rng = random.Random(f"combos-{seed}")
    rng.shuffle(pairs)
    return {"single": [(t,) for t in sorted(TYPES)], "seen_pair": sorted(pairs[:seen_pairs]),
            "unseen_pair": sorted(pairs[seen_pairs:]), "unseen_triple": triples}


def _draw(rng: random.Random, combos: list[tuple[str, ...]]) -> Prompt:
    obj = rng.choice(OBJECTS)
    kinds = list(rng.choice(combos))
    rng.shuffle(kinds)
    return Prompt(obj, tuple(_constraint(k, obj, rng) for k in kinds))


def _unique(rng: random.Random, combos: list[tuple[str, ...]], n: int, taken: set[str], what: str) -> list[Prompt]:
    out: list[Prompt] = []
    for _ in range(200 * n):
        if len(out) == n:
            return out
        p = _draw(rng, combos)
        if p.text not in taken:
            taken.add(p.text)
            out.append(p)
    raise ValueError(f"study task: only {len(out)} distinct {what} prompts could be drawn, {n} asked")


@dataclass(frozen=True)
class TaskData:
    """The generated splits."""

    demos: list[tuple[Prompt, str]]
    """(prompt, teacher answer)."""
    rl: list[tuple[Prompt, str, str]]
    """(prompt, group, teacher reference answer)."""
    eval: list[tuple[Prompt, str]]
    """(prompt, group)."""
    warm: list[tuple[Prompt, str]]
    """(prompt, answer drawn without regard to it)."""
    teacher_pass_rate: float
    """Fraction of demonstrations whose answer passes every constraint."""


def teacher_answer(prompt: Prompt, follow: float, rng: random.Random) -> str:
    """The teacher's answer: each constraint applied with probability `follow`."""
    kinds = {c.kind for c in prompt.constraints if rng.random() < follow}
    return compose(prompt.obj, _surface_for(prompt, kinds), "teacher")


def warm_record(rng: random.Random, combos: list[tuple[str, ...]], p_feature: float,
                p_teacher_style: float) -> tuple[Prompt, str]:
    """A warm-start pair: a request without constraints and an answer whose features are drawn at
    random (so the corpus teaches facts and formats, not instruction following), in the teacher's
    manner with probability `p_teacher_style`, else in the plain one.

    The requests carry no constraint sentence, so the meaning of an instruction is learned only in
    the study. (A first version added random ones, which teaches a model to ignore them.)"""
    del combos  # kept in the signature: the draw order of `generate` stays one rng per purpose
    prompt = Prompt(rng.choice(OBJECTS), ())
    kinds = {k for k in TYPES if rng.random() < p_feature}
    for pair in (["lower", "upper"], ["short", "long"]):
        if set(pair) <= kinds:
            kinds.discard(rng.choice(pair))
    surface = Surface(frozenset(kinds), rng.choice(END_PHRASES), rng.choice(KEYWORDS))
    style = "teacher" if rng.random() < p_teacher_style else "plain"
    return prompt, compose(prompt.obj, surface, style)


def generate(config: TaskConfig = TaskConfig()) -> TaskData:
    """Every split of the task, deterministic in `config`; raises if an ideal answer fails its
    checkers (the task would then ask for something the checkers do not accept)."""
    combos = combinations(config.seed, config.seen_pairs)
    seen = combos["single"] + combos["seen_pair"]
    unseen = combos["unseen_pair"] + combos["unseen_triple"]
    taken: set[str] = set()
    rng = random.Random(f"eval-{config.seed}")
    evals = [(p, group) for group in ("single", "seen_pair", "unseen_pair", "unseen_triple")
             for p in _unique(rng, combos[group], config.eval_per_group, taken, f"eval {group}")]
    rng = random.Random(f"demos-{config.seed}")
    demo_prompts = _unique(rng, seen, config.demos, taken, "demonstration")
    teach = random.Random(f"teacher-{config.seed}")
    demos = [(p, teacher_answer(p, config.teacher.follow, teach)) for p in demo_prompts]
    rng = random.Random(f"rl-{config.seed}")
    half = config.rl_prompts // 2
    rl_prompts = ([(p, "seen") for p in _unique(rng, seen, half, taken, "RL seen")]
                  + [(p, "unseen") for p in _unique(rng, unseen, config.rl_prompts - half, taken, "RL unseen")])
    rl = [(p, group, teacher_answer(p, config.teacher.follow, teach)) for p, group in rl_prompts]
    for p, _ in evals + [(p, g) for p, g, _ in rl] + [(p, "") for p in demo_prompts]:
        if not passes(p, ideal_response(p)):
            raise AssertionError(f"study task: the ideal answer {ideal_response(p)!r} fails {p.key}")
    rng = random.Random(f"warm-{config.seed}")
    warm = [warm_record(rng, seen + unseen, config.warm_feature_p, config.warm_teacher_style)
            for _ in range(config.warm)]
    rate = sum(passes(p, a) for p, a in demos) / len(demos)
    return TaskData(demos, rl, evals, warm, rate)


def check_disjoint(data: TaskData) -> None:
    """Raise if an evaluation prompt's text appears in a training file (demos or RL prompts)."""
    train = {p.text for p, _ in data.demos} | {p.text for p, _, _ in data.rl}
    leaked = [p.key for p, _ in data.eval if p.text in train]
    if leaked:
        raise AssertionError(f"study task: {len(leaked)} evaluation prompts appear in training, e.g. {leaked[:3]}")
