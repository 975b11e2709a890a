"""The fixed words and phrases that generated constraints and their witness responses draw from.

Three families of text meet in a constrained prompt and its witness (a response built to pass
every checker, see `witness`): the kwargs the sampler draws (keywords, end phrases, first words),
the filler the witness writes around them, and the extra words it adds to reach a count. Kept
apart, they cannot undo each other: no keyword occurs inside the filler (so "use 'lantern' less
than 2 times" is not broken by the filler saying "lanterns"), the filler has no commas, no
all-capital words (not even "A" or "I") and none of the rare letters j, q, x, z (the only letters "less than" letter
counts are drawn for), and no word of one list contains a word of another. `tests/
test_dataprep_catalog.py` checks these properties, so editing a list cannot silently break the
satisfiability argument.
"""

from __future__ import annotations

FILLER = (
    "The river bends slowly past the old mill.",
    "Most travellers stop there for bread and tea.",
    "In spring the fields turn a bright shade of green.",
    "Nobody remembers who planted the first orchard.",
    "The narrow bridge links the two halves of the village.",
    "Children race paper boats under it every summer.",
    "The baker opens before dawn and closes at noon.",
    "Visitors often ask about the clock on the tower.",
    "It has shown the wrong time for forty years.",
    "Locals say that is what gives the place its charm.",
    "The market fills the main street on Sunday morning.",
    "Old stone walls keep the sheep out of the garden.",
    "The small boat carries the mail across the lake.",
    "Evening light makes the hills look soft and warm.",
    "Most houses still have wooden doors painted blue.",
    "The school bell rings twice before the lessons start.",
)
"""English sentences the witness responses are made of (see the module docstring)."""

KEYWORDS = (
    "lantern", "harbor", "copper", "violin", "meadow", "thunder", "pencil", "ribbon", "candle",
    "marble", "falcon", "velvet", "compass", "tulip", "anchor", "saddle", "whistle", "blanket",
    "cactus", "pepper", "planet", "rocket", "silver", "timber", "walnut", "button", "castle",
    "dragon", "garlic", "helmet", "island", "kettle", "ladder", "mirror", "needle", "pillow",
    "rabbit", "spider", "tunnel", "umbrella", "cabbage", "dolphin", "feather", "glacier",
    "hammock", "lobster", "magnet", "nutmeg", "parrot", "sapphire",
)
"""Words for keywords:existence, keywords:frequency and keywords:forbidden_words."""

FIRST_WORDS = ("today", "meanwhile", "first", "finally", "however", "also", "next", "still",
               "often", "sometimes")
"""Words a paragraph may be asked to start with (length_constraints:nth_paragraph_first_word)."""

END_PHRASES = (
    "Is there anything else I can help with?",
    "Any other questions?",
    "Let me know if you have additional questions.",
    "Hope this helps.",
    "That is all for now.",
    "Thank you for reading.",
)
"""Exact closing phrases for startend:end_checker."""

CAPITAL_WORDS = ("NOTE", "TIP", "GOOD", "WELL", "TRUE", "BEST", "SAFE", "DONE")
"""All-capital words a witness adds to reach change_case:capital_word_frequency (at least)."""

LETTER_WORDS = {
    "a": ("banana", "alpaca"), "b": ("bubble", "baby"), "c": ("cocoa", "circle"),
    "d": ("added", "dad"), "e": ("tree", "green"), "f": ("fluff", "off"), "g": ("egg", "gift"),
    "h": ("hush", "high"), "i": ("mimic", "idea"), "j": ("jam", "jar", "joy", "jog"),
    "k": ("kick", "knock"), "l": ("lull", "little"), "m": ("mum", "memo"), "n": ("noon", "nine"),
    "o": ("moon", "good"), "p": ("pop", "paper"), "q": ("quiet", "queen", "quick", "quite"),
    "r": ("error", "river"), "s": ("sass", "seas"), "t": ("tot", "tent"),
    "u": ("usual", "unusual"), "v": ("valve", "vivid"), "w": ("wow", "window"),
    "x": ("fox", "box", "six", "mix", "wax"), "y": ("yay", "yearly"),
    "z": ("zoo", "zero", "zone", "lazy"),
}
"""Per letter, words containing it, cycled to reach keywords:letter_frequency (at least). Only
the words of j, q, x and z contain those letters; several words per letter keep the language
detector reading English."""

RARE_LETTERS = ("j", "q", "x", "z")
"""Letters "less than" letter-count constraints are drawn for: the filler never uses them."""

SECTION_SPLITTERS = ("Section", "SECTION", "Part", "PART")
"""Section header words (detectable_format:multiple_sections matches them case-sensitively)."""

POSTSCRIPT_MARKERS = ("P.S.", "P.P.S")
"""Postscript markers (detectable_content:postscript has tolerant patterns for exactly these)."""

CONSTRAINED_ANSWER = "My answer is yes."
"""The option of detectable_format:constrained_response the witness writes."""

LANGUAGE_NAMES = {
    "de": "German", "it": "Italian", "pt": "Portuguese", "fr": "French", "es": "Spanish",
    "fi": "Finnish", "vi": "Vietnamese", "sw": "Swahili", "ru": "Russian", "bg": "Bulgarian",
    "ar": "Arabic", "fa": "Persian", "ur": "Urdu", "hi": "Hindi", "mr": "Marathi", "ne": "Nepali",
    "bn": "Bengali", "gu": "Gujarati", "pa": "Punjabi", "te": "Telugu", "ta": "Tamil",
    "kn": "Kannada", "th": "Thai", "ko": "Korean", "ja": "Japanese",
}
"""Languages language:response_language is drawn from (codes as the detector returns them).
English is left out: the instructions are English, so asking for English adds nothing."""

LATIN_SCRIPT_LANGUAGES = frozenset({"de", "it", "pt", "fr", "es", "fi", "vi", "sw"})
"""Languages written in the Latin alphabet (a letter count can be met inside their words)."""

CASED_LANGUAGES = LATIN_SCRIPT_LANGUAGES | {"ru", "bg"}
"""Languages whose script has capital letters (all-capital words exist in them)."""
