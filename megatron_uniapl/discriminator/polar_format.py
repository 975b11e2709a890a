"""Token ids the frozen scorer feeds its reward model, under either input preset.

"custom" fills the configured template and tokenizes it without the tokenizer's own special
tokens. "polar" lays a triple out as InternLM's POLAR reward models read it: the reference side
(prompt, joiner, reference), the special token <|reward|>, the candidate side (prompt, joiner,
response) and a final reward token whose hidden state the head scores. Either may start with the
tokenizer's BOS id.

The whole text is tokenized in one call, not piece by piece: the special tokens are then split
out by the tokenizer itself, and a tokenizer that treats the start of a text specially (a
sentencepiece prefix space) treats only the real start so, as in POLAR's own client, which also
tokenizes one string. These functions are pure (no model), so the ids can be tested exactly.
"""

from __future__ import annotations

from collections.abc import Sequence

from megatron_uniapl.config.discriminator import FrozenInputLayout


def polar_text(prompt: str, reference: str, response: str, layout: FrozenInputLayout) -> str:
    """POLAR's input text: prompt, joiner, reference, reward token, prompt, joiner, response, score token."""
    # The joiner is written even around an empty part: POLAR's published client does so
    # (its training code omits it there; an empty response is the only case this decides).
    reference_side = prompt + layout.joiner + reference
    candidate_side = prompt + layout.joiner + response
    return reference_side + layout.reward_token + candidate_side + layout.score_token


def render_texts(
    layout: FrozenInputLayout, prompts: Sequence[str], references: Sequence[str], responses: Sequence[str]
) -> list[str]:
    """The input text of every triple under `layout` (values are inserted literally)."""
    if layout.preset == "polar":
        return [polar_text(p, r, y, layout) for p, r, y in zip(prompts, references, responses)]
    return [layout.template.format(prompt=p, reference=r, response=y)
            for p, r, y in zip(prompts, references, responses)]


def encode_triples(
    tokenizer, layout: FrozenInputLayout, prompts: Sequence[str], references: Sequence[str],
    responses: Sequence[str],
) -> list[list[int]]:
    """Untruncated input ids of every triple: the optional BOS id, then the rendered text's tokens."""
    texts = render_texts(layout, prompts, references, responses)
    encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]
    # BOS is added by id rather than by `add_special_tokens=True`: tokenizers differ in what that
    # adds (some nothing, some an EOS too), while the preset means exactly one leading BOS.
    prefix = [tokenizer.bos_token_id] if layout.add_bos else []
    return [prefix + list(ids) for ids in encoded]


def truncate(ids: list[int], max_length: int, side: str, keep_first: bool) -> list[int]:
    """`ids` cut to `max_length` from `side` ("left" keeps the end); `keep_first` keeps ids[0] (a BOS)."""
    if len(ids) <= max_length:
        return ids
    head, body = (ids[:1], ids[1:]) if keep_first else ([], ids)
    room = max(max_length - len(head), 0)
    kept = body[len(body) - room:] if side == "left" else body[:room]
    return head + kept


def check_tokenizer(tokenizer, layout: FrozenInputLayout, path: str, where: str = "discriminator.frozen") -> None:
    """Raise ValueError naming `path` and the field when the tokenizer cannot render `layout`."""
    if layout.add_bos and tokenizer.bos_token_id is None:
        raise ValueError(f"{path}: the tokenizer defines no BOS token, but {where}.add_bos is on "
                         f"(preset {layout.preset!r}); set {where}.add_bos=false")
    for name in ("reward_token", "score_token"):
        token = getattr(layout, name)
        if token:
            _check_single_token(tokenizer, token, path, f"{where}.{name}")


def _check_single_token(tokenizer, token: str, path: str, field: str) -> None:
    """`token` must be in the vocabulary and come out of the tokenizer as that one id."""
    vocab_id = tokenizer.get_vocab().get(token)
    if vocab_id is None:
        raise ValueError(f"{path}: {token!r} is not in the tokenizer's vocabulary; set {field} to a "
                         f"special token this checkpoint was trained with (or \"\" for none)")
    # In the vocabulary but not registered as a special/added token, the string would be split
    # into ordinary pieces inside the text, and the model would never see the token itself.
    ids = tokenizer(token, add_special_tokens=False)["input_ids"]
    if list(ids) != [vocab_id]:
        raise ValueError(f"{path}: {token!r} ({field}) is in the vocabulary as id {vocab_id} but the "
                         f"tokenizer splits the text into {list(ids)}; it must be an added special token")
