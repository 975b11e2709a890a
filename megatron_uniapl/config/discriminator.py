"""Settings of the discriminators: input templates, the frozen scorer, the co-trained classifier.

Templates are Python format strings with the fields {prompt}, {reference} and {response}
(literal braces written {{ and }}).
"""

from __future__ import annotations

import string
from dataclasses import dataclass

TEMPLATE_FIELDS = frozenset({"prompt", "reference", "response"})


POLAR_LIKE_TEMPLATE = (
    "<|im_start|>user\n{prompt}<|im_end|>\n"
    "<|im_start|>assistant\nReference response:\n{reference}\n\n"
    "Candidate response:\n{response}<|im_end|>"
)
"""Default layout: the prompt as the user turn, then the expert reference and the candidate in one
assistant turn, so a sequence classifier reads the candidate with the reference in context (the
reference-conditioned pattern of POLAR-style reward models). Use the layout the checkpoint was
trained with when it has one."""


def validate_template(
    template: str, where: str = "template", required: frozenset = frozenset({"response"})
) -> str:
    """Check that `template` uses only {prompt}/{reference}/{response} and all `required` ones."""
    try:
        fields = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as err:
        raise ValueError(
            f"{where} is not a valid format string ({err}); write literal braces as {{{{ }}}}"
        ) from err
    unknown = fields - TEMPLATE_FIELDS
    if unknown:
        raise ValueError(
            f"{where} uses unknown field(s) {sorted(unknown)}; allowed: {sorted(TEMPLATE_FIELDS)}"
        )
    missing = set(required) - fields
    if missing:
        raise ValueError(f"{where} lacks the field(s) {sorted(missing)}")
    return template


@dataclass
class CoTrainedDiscriminatorConfig:
    """Optimization and stability settings of the co-trained discriminator."""

    lr: float = 1e-6
    """Its own learning rate (AdamW), independent of the policy's."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    betas: tuple[float, float] = (0.9, 0.999)
    """AdamW betas."""
    update_ratio: float = 1.0
    """Discriminator optimizer steps per policy step; 0.5 = every other policy step, 2 = two."""
    label_smoothing: float = 0.1
    """One-sided smoothing of the expert target (1 -> 1 - s); in [0, 0.5)."""
    r1_gamma: float = 0.0
    """Weight gamma of the R1 penalty (gamma / 2 * E||dz/dx||^2 on expert inputs); 0 = off.
    Needs a scorer with `embed` and `score_embeddings`."""
    grad_clip: float | None = 1.0
    """Max global gradient norm per update; None = no clipping."""
    score_clip: float | None = 10.0
    """Bound on |score| handed to the policy (before group normalization); None = unbounded."""
    template: str = "{prompt}{response}"
    """Text layout for `score()` on strings (fields {prompt}, {reference}, {response})."""
    max_length: int = 4096
    """Longest tokenized input for `score()` on strings; longer ones keep their last tokens."""

    def validate(self, where: str = "discriminator.cotrained") -> None:
        """Raise ValueError naming the offending field."""
        if self.lr <= 0:
            raise ValueError(f"{where}.lr must be > 0, got {self.lr}")
        if self.update_ratio < 0:
            raise ValueError(f"{where}.update_ratio must be >= 0, got {self.update_ratio}")
        if not 0.0 <= self.label_smoothing < 0.5:
            raise ValueError(f"{where}.label_smoothing must be in [0, 0.5), got {self.label_smoothing}")
        if self.r1_gamma < 0:
            raise ValueError(f"{where}.r1_gamma must be >= 0, got {self.r1_gamma}")
        for name in ("grad_clip", "score_clip"):
            v = getattr(self, name)
            if v is not None and v <= 0:
                raise ValueError(f"{where}.{name} must be > 0 or None, got {v}")
        validate_template(self.template, f"{where}.template")
        if "{reference}" in self.template.replace("{{", "").replace("}}", ""):
            # Trained on (expert answer, policy answer) pairs to the same prompt, a classifier that
            # also sees the reference learns "the response equals the reference", which tells an
            # expert answer from the policy's perfectly and the policy nothing.
            raise ValueError(f"{where}.template shows the discriminator the expert reference; a co-trained "
                             f"classifier would learn 'response == reference': use {{prompt}} and {{response}} only")


@dataclass
class OverlapScorerConfig:
    """What the model-free overlap scorer (`discriminator.kind=overlap`) compares."""

    case_sensitive: bool = False
    """Compare words with their case: "SWIMMING" and "swimming" then differ, so a response in the
    expert's case scores higher (IFEval's case constraints show in the score)."""
    punctuation: bool = False
    """Count each punctuation mark as a token of its own: a response that punctuates like the
    expert (commas, a closing phrase's full stop, quotation marks) scores higher."""


FROZEN_DTYPES = ("float32", "bfloat16", "float16")
"""Dtypes the frozen scorer can run in (torch dtype names)."""


@dataclass(frozen=True)
class FrozenInputLayout:
    """How the frozen scorer lays a triple out: a preset's defaults with the user's overrides."""

    preset: str
    """"custom" (fill `template`) or "polar" (POLAR's reference-then-candidate layout)."""
    template: str
    """The "custom" layout (unused by "polar")."""
    add_bos: bool
    """Prepend the tokenizer's BOS token id."""
    joiner: str
    """"polar": the text between the prompt and the reference, and the prompt and the response."""
    reward_token: str
    """"polar": the special token between the reference side and the candidate side ("" = none)."""
    score_token: str
    """"polar": the special token appended last, where the head reads the score ("" = none)."""


POLAR_DEFAULTS = {"add_bos": True, "joiner": "\n", "reward_token": "<|reward|>", "score_token": "[UNUSED_TOKEN_130]"}
"""What preset "polar" sets, as published for InternLM's POLAR reward models (xtuner's
RewardModelClient and POLAR's fine-tuning configs): a BOS token, prompt + "\\n" + reference, the
special token <|reward|>, prompt + "\\n" + response, and [UNUSED_TOKEN_130] (id 92527, the
checkpoint's `reward_token_id`) last. docs/method.md lists what is assumed beyond that."""

PRESET_DEFAULTS = {
    "custom": {"add_bos": False, "joiner": "", "reward_token": "", "score_token": ""},
    "polar": POLAR_DEFAULTS,
}
"""Each preset's value of the fields a user may override (None in FrozenScorerConfig)."""

POLAR_ONLY_FIELDS = ("joiner", "reward_token", "score_token")
"""Fields that only the "polar" layout reads; setting them under "custom" is refused."""


@dataclass
class FrozenScorerConfig:
    """Where the frozen reward model is and how it is fed."""

    path: str
    """Directory of a Hugging Face checkpoint (config, weights, tokenizer files)."""
    template: str = POLAR_LIKE_TEMPLATE
    """Input layout with {prompt}, {reference}, {response} (see discriminator.base); read by
    preset "custom" only."""
    batch_size: int = 16
    """Triples per forward pass."""
    max_length: int = 4096
    """Longest input in tokens; longer ones are truncated from `truncation_side`."""
    truncation_side: str = "left"
    """"left" keeps the end of the input (the candidate response); "right" keeps the start."""
    device: str = "auto"
    """"auto" (CUDA when available), "cpu", "cuda" or "cuda:N"."""
    dtype: str = "float32"
    """Weights and compute dtype: "float32", "bfloat16" or "float16"."""
    tokenizer_path: str | None = None
    """Tokenizer directory when it is not `path`."""
    preset: str = "custom"
    """Input layout: "custom" renders `template`; "polar" renders the layout of InternLM's POLAR
    reward models (BOS, prompt + reference, <|reward|>, prompt + response, a final reward token)
    and refuses a changed `template`. The four fields below default to the preset's choice."""
    add_bos: bool | None = None
    """Prepend the tokenizer's BOS token id; None = the preset's choice (custom: no, polar: yes).
    Truncation keeps it: the input is cut after it."""
    joiner: str | None = None
    """"polar" only: text between the prompt and the reference, and between the prompt and the
    response; None = "\\n" (POLAR's default "sft" wrapper; "" gives its "pretrain" wrapper)."""
    reward_token: str | None = None
    """"polar" only: special token between the reference side and the candidate side; None =
    "<|reward|>", "" = none. It must be one token of the tokenizer's vocabulary."""
    score_token: str | None = None
    """"polar" only: special token appended after the response, the last token, whose hidden state
    the head scores; None = "[UNUSED_TOKEN_130]", "" = none. It must be one vocabulary token."""
    trust_remote_code: bool = False
    """Let transformers run the code a checkpoint ships (its config's `auto_map`) for the model and
    the tokenizer. Off unless set here: no preset turns it on. Only for checkpoints you trust."""

    def layout(self) -> FrozenInputLayout:
        """The resolved input layout: the preset's defaults where a field is None."""
        defaults = PRESET_DEFAULTS[self.preset]
        chosen = {name: default if getattr(self, name) is None else getattr(self, name)
                  for name, default in defaults.items()}
        return FrozenInputLayout(preset=self.preset, template=self.template, **chosen)

    def validate(self, where: str = "discriminator.frozen") -> None:
        """Raise ValueError naming the offending field."""
        if self.preset not in PRESET_DEFAULTS:
            raise ValueError(f"{where}.preset is {self.preset!r}; choose one of {sorted(PRESET_DEFAULTS)}")
        validate_template(self.template, f"{where}.template")
        self._validate_preset_fields(where)
        if self.batch_size <= 0 or self.max_length <= 0:
            raise ValueError(f"{where}.batch_size and {where}.max_length must be > 0")
        if self.truncation_side not in ("left", "right"):
            raise ValueError(
                f"{where}.truncation_side must be 'left' or 'right', got {self.truncation_side!r}"
            )
        if self.dtype not in FROZEN_DTYPES:
            raise ValueError(f"{where}.dtype is {self.dtype!r}; choose one of {sorted(FROZEN_DTYPES)}")

    def _validate_preset_fields(self, where: str) -> None:
        """Refuse settings the chosen preset would silently ignore, or that would drop its score token."""
        if self.preset == "polar":
            if self.template != POLAR_LIKE_TEMPLATE:
                raise ValueError(f"{where}.template is not used by {where}.preset='polar'; "
                                 f"leave it unset, or use preset 'custom' for a template of your own")
        else:
            for name in POLAR_ONLY_FIELDS:
                if getattr(self, name) is not None:
                    raise ValueError(f"{where}.{name} is only read by {where}.preset='polar' "
                                     f"(the preset is {self.preset!r})")
        layout = self.layout()
        for name in ("reward_token", "score_token"):
            token = getattr(layout, name)
            if token != token.strip():
                raise ValueError(f"{where}.{name} is {token!r}: a special token has no surrounding whitespace")
        if layout.score_token and self.truncation_side == "right":
            # The head reads the last token; cutting the end would score the middle of the input.
            raise ValueError(f"{where}.truncation_side='right' would cut {where}.score_token "
                             f"({layout.score_token!r}) from over-long inputs; use 'left'")
