"""IFEval constraints on markdown-like format and detectable content (8 types).

The line-oriented patterns (bullets, highlights, section headers, postscripts) are the
reference's, including its leniencies: a line starting with `-` counts as a bullet even when it
is a horizontal rule, `**bold**` spans count twice as highlights (once as `*...*` pairs), and a
section header may be glued to the surrounding text.
"""

from __future__ import annotations

import json
import re

from megatron_uniapl.rewards.registry import Kwarg, non_empty, non_negative, register

CONSTRAINED_RESPONSES = ("My answer is yes.", "My answer is no.", "My answer is maybe.")
"""The options of `detectable_format:constrained_response`; any one as a substring passes."""

_STAR_BULLET = re.compile(r"^\s*\*[^\*].*$", flags=re.MULTILINE)
_DASH_BULLET = re.compile(r"^\s*-.*$", flags=re.MULTILINE)
_SINGLE_HIGHLIGHT = re.compile(r"\*[^\n\*]*\*")
_DOUBLE_HIGHLIGHT = re.compile(r"\*\*[^\n\*]*\*\*")
_TITLE = re.compile(r"<<[^\n]+>>")
_PLACEHOLDER = re.compile(r"\[.*?\]")
_JSON_FENCE_OPENINGS = ("```json", "```Json", "```JSON", "```")


def _regex_problem(pattern: str) -> str | None:
    try:
        re.compile(pattern)
    except re.error as e:
        return f"is used as a regular expression by IFEval and does not compile: {e}"
    return None


@register("detectable_format:number_bullet_lists",
          Kwarg("num_bullets", int, "exact number of bullet lines", non_negative))
def number_bullet_lists(response: str, *, num_bullets: int) -> bool:
    """Exactly `num_bullets` lines start with `* ` (not `**`) or `-`, after optional spaces."""
    count = len(_STAR_BULLET.findall(response)) + len(_DASH_BULLET.findall(response))
    return count == num_bullets


@register("detectable_format:constrained_response")
def constrained_response(response: str) -> bool:
    """One of 'My answer is yes.' / 'no.' / 'maybe.' occurs in the response."""
    stripped = response.strip()
    return any(option in stripped for option in CONSTRAINED_RESPONSES)


@register("detectable_format:number_highlighted_sections",
          Kwarg("num_highlights", int, "minimum number of *highlighted* spans", non_negative))
def number_highlighted_sections(response: str, *, num_highlights: int) -> bool:
    """At least `num_highlights` non-blank `*...*` spans on one line (`**...**` spans add one)."""
    count = sum(1 for span in _SINGLE_HIGHLIGHT.findall(response) if span.strip("*").strip())
    count += sum(1 for span in _DOUBLE_HIGHLIGHT.findall(response) if span[2:-2].strip())
    return count >= num_highlights


@register("detectable_format:multiple_sections",
          Kwarg("section_spliter", str, "the section keyword, e.g. 'SECTION' (a regex)",
                lambda v: non_empty(v) or _regex_problem(v.strip()), str.strip),
          Kwarg("num_sections", int, "minimum number of sections", non_negative))
def multiple_sections(response: str, *, section_spliter: str, num_sections: int) -> bool:
    """At least `num_sections` headers `<spliter> <number>` (spaces around optional)."""
    headers = re.split(r"\s?" + section_spliter + r"\s?\d+\s?", response)
    return len(headers) - 1 >= num_sections


@register("detectable_format:json_format")
def json_format(response: str) -> bool:
    """The response, stripped of one markdown code fence (```json ... ```), parses as JSON."""
    body = response.strip()
    for opening in _JSON_FENCE_OPENINGS:
        body = body.removeprefix(opening)
    body = body.removesuffix("```").strip()
    try:
        json.loads(body)
    except (ValueError, RecursionError):
        return False
    return True


@register("detectable_format:title")
def title(response: str) -> bool:
    """Some `<<title>>` on one line has a non-blank title."""
    return any(found.lstrip("<").rstrip(">").strip() for found in _TITLE.findall(response))


@register("detectable_content:number_placeholders",
          Kwarg("num_placeholders", int, "minimum number of [placeholders]", non_negative))
def number_placeholders(response: str, *, num_placeholders: int) -> bool:
    """At least `num_placeholders` bracketed spans `[...]` (each on one line, may be empty)."""
    return len(_PLACEHOLDER.findall(response)) >= num_placeholders


def _postscript_pattern(marker: str) -> str:
    # The two markers IFEval generates get tolerant patterns (optional spaces between the
    # letters); any other marker is matched literally-as-a-regex, lower-cased.
    if marker == "P.P.S":
        return r"\s*p\.\s?p\.\s?s.*$"
    if marker == "P.S.":
        return r"\s*p\.\s?s\..*$"
    return r"\s*" + marker.lower() + r".*$"


@register("detectable_content:postscript",
          Kwarg("postscript_marker", str, "the marker, e.g. 'P.S.' or 'P.P.S'",
                lambda v: non_empty(v) or _regex_problem(_postscript_pattern(v.strip())),
                str.strip))
def postscript(response: str, *, postscript_marker: str) -> bool:
    """The marker occurs (case-insensitively) somewhere in the response."""
    pattern = _postscript_pattern(postscript_marker)
    return re.search(pattern, response.lower(), flags=re.MULTILINE) is not None
