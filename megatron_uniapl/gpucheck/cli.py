"""`python tools/gpu_check.py`: what is installed, `pip check`, then every GPU check this machine
can run (each in its own process, within a time budget), and a table of results with the reason
for every skip. Exit status 0 when nothing that ran failed, 1 otherwise."""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from megatron_uniapl.gpucheck import environment, registry


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", default=None, help="where checks write models, runs and logs (default: a new temp dir)")
    parser.add_argument("--budget-s", type=float, default=600.0, help="time for all checks together (default 600)")
    parser.add_argument("--only", nargs="*", default=None, choices=[c.name for c in registry.CHECKS], help="run only these checks")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    versions = environment.installed_versions()
    machine = environment.probe_machine(versions)
    pip_ok, pip_lines = environment.pip_check()
    print(environment.format_report(versions, machine.cuda, pip_ok, pip_lines), flush=True)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="uniapl-gpu-check-"))
    print(f"work directory: {workdir}\n", flush=True)
    outcomes = registry.run_all(machine, workdir, args.budget_s, args.only, echo=lambda line: print(line, flush=True))
    print()
    print(registry.format_table(outcomes))
    ran = [o for o in outcomes if o.status != "skipped"]
    failed = [o for o in ran if o.status != "ok"]
    print(f"\n{len(ran) - len(failed)} passed, {len(failed)} failed, {len(outcomes) - len(ran)} skipped "
          f"in {time.perf_counter() - start:.0f} s")
    return 1 if failed else 0
