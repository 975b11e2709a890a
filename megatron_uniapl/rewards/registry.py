"""One registry of verifiable instruction constraints, each with a kwargs schema.

A constraint type is a pure function `check(response, **kwargs) -> bool` plus a schema of its
keyword arguments. Types join the registry with the `register` decorator from any module, so
new families (IFBench, AutoIF, project-specific ones) never touch this file or the reward code.

Prompts carry their constraints in the IFEval format: a list of instruction ids and a parallel
list of kwargs dicts. `build_constraints` validates that pair once (when data is loaded) into
`Constraint` objects; a `None` value counts as absent, so Hugging Face's IFEval export (every
key present, most of them null) is accepted as is. Anything else wrong — an unknown id, a
missing, unknown or ill-typed kwarg, a value the checker cannot use — raises `ConstraintError`
naming where the record came from, the position in the list and the field.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

CheckFn = Callable[..., bool]

BUILTIN_MODULES = (
    "megatron_uniapl.rewards.ifeval_words",
    "megatron_uniapl.rewards.ifeval_format",
    "megatron_uniapl.rewards.ifeval_structure",
)
"""Modules whose import registers the 25 IFEval constraint types; loaded on first lookup."""


class ConstraintError(ValueError):
    """A constraint in a record is unknown or has unusable kwargs (the message says where)."""


@dataclass(frozen=True)
class Kwarg:
    """The schema of one keyword argument of a constraint type."""

    name: str
    """The key in the kwargs dict (and the checker's keyword parameter)."""
    kind: type
    """Expected Python type: `int`, `str` or `list` (a list of strings)."""
    doc: str
    """What the argument means, shown in errors and `describe()`."""
    validate: Callable[[Any], str | None] | None = None
    """Returns a problem description for an unusable value, or None when the value is fine."""
    normalize: Callable[[Any], Any] | None = None
    """Maps an accepted value to what the checker receives (e.g. strips a phrase)."""


@dataclass(frozen=True)
class ConstraintType:
    """A registered constraint type: its id, its checker and its kwargs schema."""

    instruction_id: str
    """The IFEval-style id, `family:name`."""
    check: CheckFn
    """`check(response, **kwargs) -> bool` on the (already validated, normalized) kwargs."""
    kwargs: tuple[Kwarg, ...]
    """Every argument is required; there are no optional arguments in IFEval's types."""
    doc: str
    """One line on what the checker accepts."""
    cross_check: Callable[[dict[str, Any]], tuple[str, str] | None] | None = None
    """Checks relations between arguments on the normalized kwargs; returns (field, problem)
    for unusable combinations, None when fine."""


_REGISTRY: dict[str, ConstraintType] = {}
_builtins_loaded = False


def register(instruction_id: str, *kwargs: Kwarg,
             cross_check: Callable[[dict[str, Any]], tuple[str, str] | None] | None = None
             ) -> Callable[[CheckFn], CheckFn]:
    """Decorator adding `check(response, **kwargs) -> bool` to the registry under `instruction_id`.

    The checker must be a module-level function (the process pool pickles it by name).
    """

    def add(check: CheckFn) -> CheckFn:
        if ":" not in instruction_id:
            raise ValueError(f"constraint id {instruction_id!r} must look like 'family:name'")
        existing = _REGISTRY.get(instruction_id)
        if existing is not None and existing.check is not check:
            raise ValueError(f"constraint id {instruction_id!r} is already registered by "
                             f"{existing.check.__module__}.{existing.check.__qualname__}")
        doc = (check.__doc__ or "").strip().splitlines()
        _REGISTRY[instruction_id] = ConstraintType(instruction_id, check, tuple(kwargs),
                                                   doc[0] if doc else "", cross_check)
        return check

    return add


def _load_builtins() -> None:
    global _builtins_loaded
    if not _builtins_loaded:
        for module in BUILTIN_MODULES:
            importlib.import_module(module)
        _builtins_loaded = True


def registered() -> dict[str, ConstraintType]:
    """All registered constraint types by id (the built-in IFEval ones included)."""
    _load_builtins()
    return dict(_REGISTRY)


@dataclass(frozen=True)
class Constraint:
    """One validated constraint of one prompt: a type and the kwargs its checker receives."""

    instruction_id: str
    """The registered id."""
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    """Validated and normalized kwargs."""
    check_fn: CheckFn | None = field(default=None, compare=False, repr=False)
    """The checker; travels with the constraint (pickled by reference) so that worker
    processes see types registered by any importable module."""

    def check(self, response: str) -> bool:
        """Whether `response` (one candidate text, taken as is) satisfies this constraint."""
        check = self.check_fn or registered()[self.instruction_id].check
        return check(response, **self.kwargs)


def _type_ok(value: Any, kind: type) -> bool:
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is list:
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    return isinstance(value, kind)


def build_constraint(instruction_id: Any, kwargs: Any, where: str, index: int = 0) -> Constraint:
    """Validate one (id, kwargs) pair, the `index`-th of its record.

    Errors read `{where}: instruction_id_list[{index}]: ...` or `{where}: kwargs[{index}].{name}:
    ...`; `where` names the record (`data.jsonl:7`, `sample 3`).
    """
    _load_builtins()
    id_field, kw_field = f"{where}: instruction_id_list[{index}]", f"{where}: kwargs[{index}]"
    if not isinstance(instruction_id, str):
        raise ConstraintError(f"{id_field}: must be a string, got {instruction_id!r}")
    spec = _REGISTRY.get(instruction_id)
    if spec is None:
        raise ConstraintError(f"{id_field}: unknown constraint type {instruction_id!r}; "
                              f"registered: {', '.join(sorted(_REGISTRY))}")
    if kwargs is None:
        kwargs = {}
    if not isinstance(kwargs, Mapping):
        raise ConstraintError(f"{kw_field}: must be an object, got {type(kwargs).__name__}")
    given = {k: v for k, v in kwargs.items() if v is not None}
    known = {kw.name: kw for kw in spec.kwargs}
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise ConstraintError(f"{kw_field}.{unknown[0]}: not an argument of {instruction_id} "
                              f"(its arguments: {', '.join(known) or 'none'})")
    out: dict[str, Any] = {}
    for kw in spec.kwargs:
        if kw.name not in given:
            raise ConstraintError(f"{kw_field}.{kw.name}: missing; {instruction_id} needs it "
                                  f"({kw.doc})")
        value = given[kw.name]
        if not _type_ok(value, kw.kind):
            expected = "a list of strings" if kw.kind is list else kw.kind.__name__
            raise ConstraintError(f"{kw_field}.{kw.name}: expected {expected}, got {value!r}")
        problem = kw.validate(value) if kw.validate else None
        if problem:
            raise ConstraintError(f"{kw_field}.{kw.name}: {problem} (got {value!r})")
        out[kw.name] = kw.normalize(value) if kw.normalize else value
    if spec.cross_check is not None:
        problem = spec.cross_check(out)
        if problem:
            raise ConstraintError(f"{kw_field}.{problem[0]}: {problem[1]}")
    return Constraint(instruction_id, out, spec.check)


def build_constraints(instruction_ids: Any, kwargs_list: Any, where: str) -> list[Constraint]:
    """Validate an IFEval pair `instruction_id_list` / `kwargs` (parallel lists) into constraints.

    `kwargs_list` may be None (no kwargs for any constraint). Errors name `where`, the field and
    the index, e.g. `train.jsonl:12: kwargs[1].num_words: expected int, got '300'`.
    """
    if not isinstance(instruction_ids, list) or not instruction_ids:
        raise ConstraintError(f"{where}: instruction_id_list: must be a non-empty list, got "
                              f"{instruction_ids!r}")
    if kwargs_list is None:
        kwargs_list = [{}] * len(instruction_ids)
    if not isinstance(kwargs_list, list) or len(kwargs_list) != len(instruction_ids):
        got = f"{len(kwargs_list)} entries" if isinstance(kwargs_list, list) else repr(kwargs_list)
        raise ConstraintError(f"{where}: kwargs: must be a list parallel to instruction_id_list "
                              f"({len(instruction_ids)} entries), got {got}")
    return [build_constraint(iid, kw, where, i)
            for i, (iid, kw) in enumerate(zip(instruction_ids, kwargs_list))]


# Validators shared by the families.
def non_negative(value: int) -> str | None:
    return "must be >= 0" if value < 0 else None


def non_empty(value: str) -> str | None:
    return "must not be empty" if not value.strip() else None


RELATIONS = ("less than", "at least")
"""The comparison relations of IFEval's counting constraints."""


def relation_ok(value: str) -> str | None:
    return None if value in RELATIONS else f"must be one of {RELATIONS}"


def compare(count: int, relation: str, threshold: int) -> bool:
    """`count < threshold` for 'less than', `count >= threshold` for 'at least'."""
    return count < threshold if relation == "less than" else count >= threshold


def describe(specs: Sequence[ConstraintType] | None = None) -> str:
    """A plain-text table of the registered types and their kwargs (for `--help` and docs)."""
    lines = []
    for spec in specs or sorted(registered().values(), key=lambda s: s.instruction_id):
        args = ", ".join(f"{k.name}: {k.kind.__name__}" for k in spec.kwargs)
        lines.append(f"{spec.instruction_id}({args}): {spec.doc}")
    return "\n".join(lines)
