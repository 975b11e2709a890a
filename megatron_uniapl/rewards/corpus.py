"""Deterministic candidate responses that satisfy, narrowly violate or loosely satisfy IFEval
constraints: a workload for the reward benchmark and the corpus of the agreement test.

For each constraint of a prompt it writes one response meant to satisfy it and one meant to
miss it by the smallest step (one word, bullet, sentence or occurrence too few or too many),
then wrappers that only loose mode forgives (a chatty first and last line, markdown stars),
and a few prompt-independent texts (blank, the prompt echoed, upper case, non-English). Every
response is later checked against *all* constraints of its prompt, so each type sees both
verdicts. Whether a "satisfying" text really satisfies is for the checkers to say: the corpus
only has to exercise them near their boundaries.
"""

from __future__ import annotations

import json
import random
from typing import Callable, Mapping, Sequence

FILLER = (
    "The river bends slowly past the old mill.",
    "Most travellers stop there for bread and tea.",
    "In spring the fields turn a bright shade of green.",
    "Nobody remembers who planted the first orchard.",
    "A narrow bridge joins the two halves of the village.",
    "Children race paper boats under it every summer.",
    "The baker opens before dawn and closes at noon.",
    "Visitors often ask about the clock on the tower.",
    "It has shown the wrong time for forty years.",
    "Locals say that is part of its charm.",
)
"""Plain English sentences without commas or markdown, the raw material of every response."""

LANGUAGE_SAMPLES = {
    "de": "Das Wetter ist heute sehr schön und wir gehen mit Freunden im Park spazieren.",
    "it": "Oggi il tempo è molto bello e andiamo a fare una passeggiata nel parco con gli amici.",
    "pt": "Hoje o tempo está muito bonito e vamos passear no parque com os nossos amigos.",
    "fr": "Aujourd'hui il fait très beau et nous allons nous promener dans le parc avec des amis.",
    "es": "Hoy hace muy buen tiempo y vamos a pasear por el parque con nuestros amigos.",
    "fi": "Tänään on todella kaunis sää ja menemme puistoon kävelemään ystävien kanssa.",
    "vi": "Hôm nay thời tiết rất đẹp và chúng tôi đi dạo trong công viên với bạn bè.",
    "sw": "Leo hali ya hewa ni nzuri sana na tunakwenda kutembea katika bustani pamoja na marafiki.",
    "ru": "Сегодня очень хорошая погода, и мы идём гулять в парк вместе с друзьями.",
    "bg": "Днес времето е много хубаво и отиваме на разходка в парка заедно с приятели.",
    "ar": "الطقس اليوم جميل جدا ونحن نذهب للتنزه في الحديقة مع الأصدقاء.",
    "fa": "امروز هوا خیلی خوب است و ما با دوستان خود به پارک می‌رویم.",
    "ur": "آج موسم بہت اچھا ہے اور ہم دوستوں کے ساتھ پارک میں سیر کرنے جا رہے ہیں۔",
    "hi": "आज मौसम बहुत अच्छा है और हम दोस्तों के साथ पार्क में घूमने जा रहे हैं।",
    "mr": "आज हवामान खूप छान आहे आणि आम्ही मित्रांसोबत बागेत फिरायला जात आहोत.",
    "ne": "आज मौसम धेरै राम्रो छ र हामी साथीहरूसँग पार्कमा घुम्न जाँदैछौं।",
    "bn": "আজ আবহাওয়া খুব সুন্দর এবং আমরা বন্ধুদের সাথে পার্কে বেড়াতে যাচ্ছি।",
    "gu": "આજે હવામાન ખૂબ સરસ છે અને અમે મિત્રો સાથે બગીચામાં ફરવા જઈએ છીએ.",
    "pa": "ਅੱਜ ਮੌਸਮ ਬਹੁਤ ਵਧੀਆ ਹੈ ਅਤੇ ਅਸੀਂ ਦੋਸਤਾਂ ਨਾਲ ਪਾਰਕ ਵਿੱਚ ਘੁੰਮਣ ਜਾ ਰਹੇ ਹਾਂ।",
    "te": "ఈ రోజు వాతావరణం చాలా బాగుంది మరియు మేము స్నేహితులతో పార్కుకు వెళ్తున్నాము.",
    "ta": "இன்று வானிலை மிகவும் நன்றாக உள்ளது நாங்கள் நண்பர்களுடன் பூங்காவிற்கு செல்கிறோம்.",
    "kn": "ಇಂದು ಹವಾಮಾನ ತುಂಬಾ ಚೆನ್ನಾಗಿದೆ ಮತ್ತು ನಾವು ಸ್ನೇಹಿತರೊಂದಿಗೆ ಉದ್ಯಾನಕ್ಕೆ ಹೋಗುತ್ತಿದ್ದೇವೆ.",
    "th": "วันนี้อากาศดีมากและเราจะไปเดินเล่นในสวนสาธารณะกับเพื่อน",
    "ko": "오늘 날씨가 정말 좋아서 우리는 친구들과 함께 공원에 산책하러 갑니다.",
    "ja": "今日はとても良い天気なので、友達と一緒に公園を散歩します。",
}
"""One sentence per language, to satisfy `language:response_language`."""


def _sentences(n: int, rng: random.Random) -> str:
    return " ".join(rng.choice(FILLER) for _ in range(n))


def _words(n: int, rng: random.Random) -> str:
    pool = " ".join(FILLER).replace(".", "").split()
    return " ".join(rng.choice(pool) for _ in range(n))


def _near(kwargs: Mapping, count_key: str, relation_key: str | None, satisfy: bool) -> int:
    """A count on the satisfying or the violating side of the threshold, one step from it."""
    threshold = kwargs[count_key]
    at_least = relation_key is None or kwargs[relation_key] == "at least"
    if at_least == satisfy:
        return threshold
    return max(threshold - 1, 0)


def _letter_text(letter: str, count: int, rng: random.Random) -> str:
    words = [w for w in _words(30, rng).split() if letter not in w.lower()]
    return " ".join(words + [letter.upper() if i % 2 else letter for i in range(count)])


def _paragraphs(kwargs: Mapping, satisfy: bool, rng: random.Random) -> str:
    parts = [_sentences(2, rng) for _ in range(kwargs["num_paragraphs"])]
    nth = kwargs["nth_paragraph"]
    if nth <= len(parts):
        first = kwargs["first_word"] if satisfy else "otherwise"
        parts[nth - 1] = f"{first.capitalize()} {parts[nth - 1]}"
    return "\n\n".join(parts)


Maker = Callable[[Mapping, bool, random.Random], str]

MAKERS: dict[str, Maker] = {
    "keywords:existence": lambda kw, ok, rng: " ".join(
        [_sentences(2, rng)] + list(kw["keywords"] if ok else kw["keywords"][:-1])),
    "keywords:frequency": lambda kw, ok, rng: " ".join(
        [_sentences(2, rng)] + [kw["keyword"]] * _near(kw, "frequency", "relation", ok)),
    "keywords:forbidden_words": lambda kw, ok, rng: _sentences(3, rng) + (
        "" if ok else f" {kw['forbidden_words'][0].upper()} indeed."),
    "keywords:letter_frequency": lambda kw, ok, rng: _letter_text(
        kw["letter"], _near(kw, "let_frequency", "let_relation", ok), rng),
    "language:response_language": lambda kw, ok, rng: (
        LANGUAGE_SAMPLES.get(kw["language"], _sentences(2, rng)) if ok else _sentences(3, rng)),
    "change_case:capital_word_frequency": lambda kw, ok, rng: " ".join(
        [_sentences(2, rng).lower()]
        + ["NOTE"] * _near(kw, "capital_frequency", "capital_relation", ok)),
    "change_case:english_capital": lambda kw, ok, rng: (
        _sentences(3, rng).upper() if ok else _sentences(3, rng)),
    "change_case:english_lowercase": lambda kw, ok, rng: (
        _sentences(3, rng).lower() if ok else _sentences(3, rng)),
    "punctuation:no_comma": lambda kw, ok, rng: (
        _sentences(3, rng) if ok else _sentences(2, rng).replace(" the ", ", the ", 1) + ", yes."),
    "detectable_format:number_bullet_lists": lambda kw, ok, rng: "\n".join(
        [_sentences(1, rng)] + [("* " if i % 2 else "- ") + _words(4, rng)
                                for i in range(kw["num_bullets"] + (0 if ok else 1))]),
    "detectable_format:constrained_response": lambda kw, ok, rng: (
        "My answer is yes." if ok else "My answer is probably yes"),
    "detectable_format:number_highlighted_sections": lambda kw, ok, rng: "\n".join(
        f"*{_words(3, rng)}* {_sentences(1, rng)}"
        for _ in range(_near(kw, "num_highlights", None, ok))) or _sentences(1, rng),
    "detectable_format:multiple_sections": lambda kw, ok, rng: "\n".join(
        f"{kw['section_spliter']} {i + 1}\n{_sentences(1, rng)}"
        for i in range(_near(kw, "num_sections", None, ok))) or _sentences(1, rng),
    "detectable_format:json_format": lambda kw, ok, rng: (
        "```json\n" + json.dumps({"text": _sentences(1, rng)}) + "\n```" if ok
        else "{'text': '" + _sentences(1, rng) + "'}"),
    "detectable_format:title": lambda kw, ok, rng: (
        f"<<{_words(3, rng)}>>" if ok else "<<  >>") + "\n" + _sentences(2, rng),
    "detectable_content:number_placeholders": lambda kw, ok, rng: " ".join(
        [_sentences(1, rng)] + [f"[field {i}]"
                                for i in range(_near(kw, "num_placeholders", None, ok))]),
    "detectable_content:postscript": lambda kw, ok, rng: _sentences(2, rng) + (
        f"\n\n{kw['postscript_marker']} {_sentences(1, rng)}" if ok else ""),
    "length_constraints:number_sentences": lambda kw, ok, rng: _sentences(
        _near(kw, "num_sentences", "relation", ok), rng),
    "length_constraints:number_words": lambda kw, ok, rng: _words(
        _near(kw, "num_words", "relation", ok), rng),
    "length_constraints:number_paragraphs": lambda kw, ok, rng: "\n***\n".join(
        _sentences(2, rng) for _ in range(kw["num_paragraphs"] + (0 if ok else 1))),
    "length_constraints:nth_paragraph_first_word": _paragraphs,
    "combination:two_responses": lambda kw, ok, rng: (
        lambda a: a + "\n******\n" + (_sentences(2, rng) + " Also." if ok else a))(
            _sentences(2, rng)),
    "combination:repeat_prompt": lambda kw, ok, rng: (
        "" if ok else "Sure. ") + kw["prompt_to_repeat"] + "\n" + _sentences(2, rng),
    "startend:end_checker": lambda kw, ok, rng: (
        f"{_sentences(2, rng)} {kw['end_phrase']}" if ok
        else f"{kw['end_phrase']} {_sentences(2, rng)}"),
    "startend:quotation": lambda kw, ok, rng: (
        f'"{_sentences(2, rng)}"' if ok else _sentences(2, rng)),
}
"""Per instruction id: `make(kwargs, satisfy, rng) -> response`."""


def responses_for(prompt: str, instruction_ids: Sequence[str], kwargs_list: Sequence[Mapping],
                  seed: int = 0) -> list[str]:
    """Candidate responses for one prompt (deterministic in `seed` and the inputs)."""
    rng = random.Random(f"{seed}:{prompt}")
    satisfying, out = [], []
    for iid, kwargs in zip(instruction_ids, kwargs_list):
        make = MAKERS.get(iid)
        if make is None:
            continue
        good = make(kwargs, True, rng)
        satisfying.append(good)
        out += [good, make(kwargs, False, rng)]
    if satisfying:
        first = satisfying[0]
        out += [
            f"Sure, here is my answer:\n{first}\nI hope this helps!",
            f"**Answer**\n{first}",
            "\n\n".join(satisfying),
        ]
    out += ["", "  \n ", prompt, prompt.upper(),
            "Ceci est une réponse en français, avec des virgules. *Voilà* !"]
    return out
