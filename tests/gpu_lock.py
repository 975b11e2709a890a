"""Check a pinned lock file against the packages' published metadata, without downloading them.

The GPU environment is installed from `requirements/gpu.lock` (every package pinned). It can
only be installed for real on a Linux GPU machine with gigabytes of wheels, so the tests check it
the way `pip check` would after an install, from metadata alone:

1. every pin has a file on the index for the target (CPython 3.12, Linux x86_64, manylinux);
2. its `Requires-Dist` is read from the wheel's `METADATA`, fetched with HTTP range requests
   (the zip's central directory and one member: a few kilobytes of a 500 MB wheel), or from an
   sdist's `PKG-INFO` when the package is only published as source;
3. starting from the roots (the top-level requirements), every requirement whose marker holds on
   the target, with the extras asked for, must be met by a pinned version; and every pin must be
   reached from a root.

`check_closure` is the pure part; `check_lock` does the network part in parallel.
"""

from __future__ import annotations

import email.parser
import io
import json
import tarfile
import time
import urllib.error
import urllib.request
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.tags import Tag, compatible_tags, cpython_tags
from packaging.utils import (
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)
from packaging.version import Version

PYPI = "https://pypi.org/simple"

TARGET_ENV = {
    **default_environment(),
    "implementation_name": "cpython", "implementation_version": "3.12.0", "os_name": "posix",
    "platform_machine": "x86_64", "platform_python_implementation": "CPython", "platform_release": "",
    "platform_system": "Linux", "platform_version": "", "python_full_version": "3.12.0",
    "python_version": "3.12", "sys_platform": "linux",
}
"""Marker environment of the GPU machines the lock is for."""

_PLATFORMS = [
    *(f"manylinux_2_{minor}_x86_64" for minor in range(28, 4, -1)),  # glibc 2.28 (RHEL 8) and older
    "manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64", "linux_x86_64",
]


def target_tags() -> list[Tag]:
    """Wheel tags the target installs, best first (as pip orders them)."""
    return [*cpython_tags((3, 12), ["cp312", "abi3", "none"], _PLATFORMS), *compatible_tags((3, 12), "cp312", _PLATFORMS)]


def read_pins(path: Path) -> dict[str, Version]:
    """`name==version` lines of a lock or requirements file -> {canonical name: version}."""
    pins = {}
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        req = Requirement(line)
        specs = list(req.specifier)
        if len(specs) != 1 or specs[0].operator != "==":
            raise ValueError(f"{path}, line {number}: {line!r} is not pinned with ==")
        pins[canonicalize_name(req.name)] = Version(specs[0].version)
    return pins


def read_requirements(path: Path) -> list[Requirement]:
    """The requirement lines of a requirements file (comments and blank lines skipped)."""
    out = []
    for line in Path(path).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            out.append(Requirement(line))
    return out


@dataclass
class Dist:
    """What the check needs of one pinned distribution."""

    name: str
    version: Version
    requires: list[str]
    requires_python: str | None = None
    filename: str | None = None


def check_closure(roots: list[Requirement], dists: dict[str, Dist], env: dict = TARGET_ENV) -> tuple[list[str], set[str]]:
    """Problems with `dists` as the install of `roots` on `env`, and the names reached. Pure.

    Walks (package, extra) pairs from the roots, evaluating each Requires-Dist marker with the
    extra it was asked for, as an installer does.
    """
    problems: list[str] = []
    reached: set[str] = set()
    done: set[tuple[str, str]] = set()
    todo: list[tuple[Requirement, str]] = [(r, "the top-level requirements") for r in roots]
    python = Version(env["python_full_version"])
    while todo:
        req, who = todo.pop()
        name = canonicalize_name(req.name)
        dist = dists.get(name)
        if dist is None:
            problems.append(f"{who} requires {req}, which is not pinned")
            continue
        if not req.specifier.contains(dist.version, prereleases=True):
            problems.append(f"{who} requires {req}, but {dist.name}=={dist.version} is pinned")
        if name not in reached and dist.requires_python and not SpecifierSet(dist.requires_python).contains(python):
            problems.append(f"{dist.name}=={dist.version} requires Python {dist.requires_python}")
        reached.add(name)
        for extra in ("", *sorted(req.extras)):
            if (name, extra) in done:
                continue
            done.add((name, extra))
            for text in dist.requires:
                sub = Requirement(text)
                if sub.marker is not None and not sub.marker.evaluate({**env, "extra": extra}):
                    continue
                if extra and (sub.marker is None or sub.marker.evaluate({**env, "extra": ""})):
                    continue  # not the extra's own: taken with the base package
                todo.append((sub, f"{dist.name}=={dist.version}" + (f"[{extra}]" if extra else "")))
    for name in sorted(set(dists) - reached):
        problems.append(f"{dists[name].name}=={dists[name].version} is pinned but nothing requires it")
    return problems, reached


class RangeFile(io.RawIOBase):
    """A remote file read with HTTP range requests, in cached blocks: enough for `zipfile` to read
    a wheel's central directory and one member without downloading the rest."""

    def __init__(self, url: str, size: int, block: int = 1 << 16, timeout: float = 60.0):
        self.url, self.size, self.block, self.timeout = url, size, block, timeout
        self.pos = 0
        self.blocks: dict[int, bytes] = {}
        self.requests = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = 0) -> int:
        self.pos = {0: offset, 1: self.pos + offset, 2: self.size + offset}[whence]
        return self.pos

    def _fetch(self, first: int, last: int) -> None:
        start, end = first * self.block, min(self.size, (last + 1) * self.block) - 1
        request = urllib.request.Request(self.url, headers={"Range": f"bytes={start}-{end}"})
        with _open(request, self.timeout) as response:
            if response.status != 206:
                raise OSError(f"{self.url}: the server ignored the range request (HTTP {response.status})")
            data = response.read()
        self.requests += 1
        for i in range(first, last + 1):
            self.blocks[i] = data[(i - first) * self.block:(i - first + 1) * self.block]

    def readinto(self, buffer) -> int:
        n = max(0, min(len(buffer), self.size - self.pos))
        if n == 0:
            return 0
        first, last = self.pos // self.block, (self.pos + n - 1) // self.block
        missing = [i for i in range(first, last + 1) if i not in self.blocks]
        if missing:
            self._fetch(missing[0], missing[-1])
        data = b"".join(self.blocks[i] for i in range(first, last + 1))
        offset = self.pos - first * self.block
        buffer[:n] = data[offset:offset + n]
        self.pos += n
        return n


def _open(request: urllib.request.Request, timeout: float, tries: int = 4):
    """urlopen with a few retries: many parallel requests now and then meet a transient DNS or
    connection failure."""
    for attempt in range(tries):
        try:
            return urllib.request.urlopen(request, timeout=timeout)
        except urllib.error.HTTPError:
            raise
        except OSError:
            if attempt == tries - 1:
                raise
            time.sleep(0.5 * 2**attempt)


def _get(url: str, headers: dict | None = None, timeout: float = 60.0) -> bytes:
    with _open(urllib.request.Request(url, headers=headers or {}), timeout) as response:
        return response.read()


def index_files(name: str, index_url: str = PYPI) -> list[dict]:
    """The files the index lists for a project (the JSON form of the simple API)."""
    raw = _get(f"{index_url.rstrip('/')}/{canonicalize_name(name)}/",
               {"Accept": "application/vnd.pypi.simple.v1+json"})
    return json.loads(raw)["files"]


def pick_file(files: list[dict], name: str, version: Version, tags: list[Tag]) -> dict | None:
    """The file an installer would take for `name==version` on the target: the best wheel, else the sdist."""
    rank = {tag: i for i, tag in enumerate(tags)}
    best, best_rank, sdist = None, len(rank), None
    for f in files:
        if f.get("yanked"):
            continue
        filename = f["filename"]
        try:
            if filename.endswith(".whl"):
                dist, ver, _, file_tags = parse_wheel_filename(filename)
                r = min((rank[t] for t in file_tags if t in rank), default=None)
                if dist == canonicalize_name(name) and ver == version and r is not None and r < best_rank:
                    best, best_rank = f, r
            elif filename.endswith((".tar.gz", ".zip")):
                dist, ver = parse_sdist_filename(filename)
                if dist == canonicalize_name(name) and ver == version:
                    sdist = f
        except ValueError:
            continue  # names that are not valid wheel/sdist file names
    return best or sdist


def remote_metadata(f: dict, max_sdist_bytes: int = 20_000_000) -> tuple[str, int]:
    """The core metadata text of one index file and the number of HTTP requests it took."""
    if f["filename"].endswith(".whl"):
        remote = RangeFile(f["url"], f["size"])
        with zipfile.ZipFile(remote) as wheel:
            member = next(n for n in wheel.namelist() if n.count("/") == 1 and n.endswith(".dist-info/METADATA"))
            return wheel.read(member).decode(), remote.requests
    if f.get("size", 0) > max_sdist_bytes:
        raise OSError(f"{f['filename']}: an sdist of {f['size']} bytes; not downloaded for its metadata")
    data = _get(f["url"])
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        member = next(m for m in archive.getmembers() if m.name.count("/") == 1 and m.name.endswith("/PKG-INFO"))
        return archive.extractfile(member).read().decode(), 1


def parse_metadata(text: str, name: str, version: Version, filename: str | None = None) -> Dist:
    message = email.parser.Parser().parsestr(text)
    return Dist(name, version, message.get_all("Requires-Dist") or [], message.get("Requires-Python"), filename)


@dataclass
class LockReport:
    """What `check_lock` found."""

    problems: list[str]
    dists: dict[str, Dist] = field(default_factory=dict)
    requests: int = 0
    seconds: float = 0.0


def fetch_dists(pins: dict[str, Version], index_url: str = PYPI, cache_dir: Path | None = None,
                workers: int = 8) -> tuple[dict[str, Dist], list[str], int]:
    """Metadata of every pin (parallel); problems for pins with no file for the target."""
    tags = target_tags()

    def one(item):
        name, version = item
        cached = cache_dir / f"{name}-{version}.METADATA" if cache_dir else None
        if cached is not None and cached.is_file():
            return parse_metadata(cached.read_text(), name, version), None, 0
        f = pick_file(index_files(name, index_url), name, version, tags)
        if f is None:
            return None, f"{name}=={version}: no file on the index for CPython 3.12 on Linux x86_64", 1
        try:
            text, requests = remote_metadata(f)
        except (OSError, zipfile.BadZipFile, tarfile.TarError, StopIteration) as err:
            return None, f"{name}=={version}: cannot read the metadata of {f['filename']} ({err or type(err).__name__})", 1
        if cached is not None:
            cached.parent.mkdir(parents=True, exist_ok=True)
            tmp = cached.with_suffix(".tmp")
            tmp.write_text(text)
            tmp.replace(cached)
        return parse_metadata(text, name, version, f["filename"]), None, requests + 1

    dists, problems, requests = {}, [], 0
    with ThreadPoolExecutor(workers) as pool:
        for (name, _), (dist, problem, n) in zip(pins.items(), pool.map(one, pins.items())):
            requests += n
            if dist is not None:
                dists[name] = dist
            if problem:
                problems.append(problem)
    return dists, problems, requests


def check_lock(lock: Path, roots: list[Requirement], built: dict[str, Version] | None = None,
               index_url: str = PYPI, cache_dir: Path | None = None) -> LockReport:
    """Check `lock` as the install of `roots` on the target. `built` are packages installed from
    source after the lock (not in it); their requirements must be met by the lock too."""
    start = time.perf_counter()
    pins = read_pins(lock)
    overlap = set(pins) & set(built or {})
    dists, problems, requests = fetch_dists({**pins, **(built or {})}, index_url, cache_dir)
    problems += [f"{name} is both in the lock and built from source" for name in sorted(overlap)]
    closure_problems, _ = check_closure(roots, dists)
    return LockReport(problems + closure_problems, dists, requests, time.perf_counter() - start)
