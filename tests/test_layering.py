"""The package's import graph points one way: every module imports only from lower layers.

The layering is stated in docs/architecture.md; this test holds the code to it. It reads the
imports of every module (including imports inside functions, which are still dependencies) and
fails on an import of the same or a higher layer, naming the file and line.
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "megatron_uniapl"

LAYERS = [
    ("config", "assets"),
    ("tokenizer", "cpu_support", "device", "rewards", "losses"),
    ("data", "parallel", "model"),
    ("convert", "planning"),
    ("rollout", "discriminator"),
    ("colocation", "algorithm", "eval"),
    ("checkpoint", "metrics", "teacher", "launch_check", "launcher"),
    ("outcome", "preflight", "dataprep"),
    ("stop", "nonfinite"),
    ("runtime",),
    ("train",),
    ("gpucheck", "rehearsal", "study"),
]
"""Bottom to top; the same list as docs/architecture.md."""

LAYER = {unit: i for i, units in enumerate(LAYERS) for unit in units}


def unit_of(path: Path) -> str:
    rel = path.relative_to(PACKAGE).with_suffix("")
    return rel.parts[0]


def imported_units(tree: ast.AST):
    """(line, unit) for every import of another part of the package."""
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            parts = node.module.split(".")
            if parts[0] != "megatron_uniapl":
                continue
            if len(parts) > 1:
                yield node.lineno, parts[1]
            else:  # from megatron_uniapl import parallel
                for alias in node.names:
                    yield node.lineno, alias.name
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "megatron_uniapl" and len(parts) > 1:
                    yield node.lineno, parts[1]


def modules():
    return sorted(p for p in PACKAGE.rglob("*.py") if unit_of(p) != "__init__")


def test_every_part_of_the_package_has_a_layer():
    units = {unit_of(p) for p in modules()}
    assert units == set(LAYER), f"unlisted: {sorted(units - set(LAYER))}, gone: {sorted(set(LAYER) - units)}"


def test_imports_point_down():
    upward = []
    for path in modules():
        src = unit_of(path)
        for line, dst in imported_units(ast.parse(path.read_text(), str(path))):
            if dst == src:
                continue
            if LAYER.get(dst, len(LAYERS)) >= LAYER[src]:
                upward.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {src} (layer {LAYER[src]}) "
                              f"imports {dst} (layer {LAYER.get(dst, '?')})")
    assert not upward, "imports that do not point down:\n" + "\n".join(upward)


def test_the_configuration_does_not_import_torch():
    import subprocess
    import sys

    code = ("import sys; import megatron_uniapl.config as c; c.load_config('recipes/tiny_cpu.yaml'); "
            "print(sorted(m for m in ('torch', 'megatron', 'vllm', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=PACKAGE.parent, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
