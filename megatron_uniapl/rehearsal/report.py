"""A rehearsal's checks (figure, limit, pass/fail) and its printed report.

Checks, each against a stated limit:
- every planned step ran, in both runs, with a finite loss;
- engine vs trainer after each weight sync (`rollout.verify_*`): mean |log-prob difference| on
  the fixed check sequences within the run's tolerance (the run itself stops above it);
- engine vs trainer on the step's own rollouts (the sampled tokens' log-probs the engine
  returned vs the trainer's recomputation, before the update): mean within the same tolerance;
- resume: the run restarted from the step-2 checkpoint reproduces step 3 of the uninterrupted
  run (losses, rewards, discriminator score, gradient norm) within 1e-6;
- on GPUs: the peak memory of every phase within the recipe's `plan.gpu_memory_gib`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from megatron_uniapl.config import RunConfig

RESUME_KEYS = ("loss/total", "loss/sft", "loss/pg_task", "loss/pg_adv", "reward/task_mean", "disc/score_mean",
               "optim/grad_norm", "rollout/response_len_mean")
RESUME_TOLERANCE = 1e-6
STEP_COLUMNS = (("loss/total", "loss"), ("reward/task_mean", "reward"), ("disc/score_mean", "disc"),
                ("optim/grad_norm", "grad norm"), ("weight_sync/logprob_mean_abs_diff", "sync check mean"),
                ("weight_sync/logprob_max_abs_diff", "sync check max"),
                ("rollout/logprob_mismatch_mean", "rollout gap mean"), ("time/weight_sync_s", "sync s"),
                ("time/step_s", "step s"))


@dataclass
class Check:
    """One pass/fail line."""

    name: str
    value: float | None
    limit: float | None
    ok: bool
    note: str = ""

    def line(self) -> str:
        value = "-" if self.value is None else f"{self.value:.3g}"
        limit = "" if self.limit is None else f" (limit {self.limit:.3g})"
        return f"  [{'PASS' if self.ok else 'FAIL'}] {self.name}: {value}{limit}{' ' + self.note if self.note else ''}"


def _worst(rows: dict[int, dict], key: str) -> float | None:
    values = [r[key] for r in rows.values() if r.get(key) is not None]
    return max(values) if values else None


def checks(config: RunConfig, reference: dict[int, dict], resumed: dict[int, dict], full_size: bool) -> list[Check]:
    """Every check of a rehearsal from the two runs' metrics per step."""
    from megatron_uniapl.rehearsal.shrink import CHECKPOINT_AT, STEPS

    out = [Check("steps of the first run", float(len(reference)), float(STEPS), sorted(reference) == list(range(1, STEPS + 1))),
           Check("step of the resumed run", float(max(resumed, default=0)), float(STEPS), STEPS in resumed
                 and min(resumed, default=0) > CHECKPOINT_AT, "(it must start after the checkpoint)")]
    losses = [r.get("loss/total") for r in (*reference.values(), *resumed.values())]
    out.append(Check("finite losses", None, None, all(v is not None and math.isfinite(v) for v in losses)))
    tolerance = config.rollout.tolerance_for(config.model.dtype)
    uses_engine = any(s.uses_rollouts for s in config.objective_config().stages)
    if uses_engine:
        sync = _worst(reference, "weight_sync/logprob_mean_abs_diff")
        out.append(Check("engine vs trainer after sync, mean |d log p|", sync, tolerance,
                         sync is not None and sync <= tolerance))
        gap = _worst(reference, "rollout/logprob_mismatch_mean")
        out.append(Check("engine vs trainer on the rollouts, mean |d log p|", gap, tolerance,
                         gap is not None and gap <= tolerance))
    if STEPS in reference and STEPS in resumed:
        a, b = reference[STEPS], resumed[STEPS]
        keys = [k for k in RESUME_KEYS if a.get(k) is not None]
        diff = max((abs(a[k] - b.get(k, math.inf)) for k in keys), default=math.inf)
        out.append(Check(f"resumed step {STEPS} equals the uninterrupted one (max |diff| over {len(keys)} metrics)",
                         diff, RESUME_TOLERANCE, diff <= RESUME_TOLERANCE))
    if full_size:
        peak = max((v for r in reference.values() for k, v in r.items() if k.endswith("_peak_gib")), default=None)
        limit = config.plan.gpu_memory_gib
        out.append(Check("peak GPU memory of any phase, GiB", peak, limit, peak is not None and peak <= limit))
    return out


def layout_line(config: RunConfig, world: int) -> str:
    m, e = config.model, config.rollout.engine.tensor_parallel_size
    dp = world // m.model_parallel_size
    return (f"layout: {world} ranks = TP {m.tensor_parallel} x PP {m.pipeline_parallel} x DP {dp}"
            f"{' (sequence parallel)' if m.sequence_parallel else ''}"
            f"{f', {m.virtual_pipeline_stages} virtual stages' if m.virtual_pipeline_stages else ''}; "
            f"{world // e} engine(s) of TP {e}; {m.dtype}; spec {m.spec}; distributed optimizer "
            f"{config.optimizer.use_distributed_optimizer}; objective {config.objective.variant}; "
            f"discriminator {config.discriminator.kind}; token multiple {m.token_multiple}")


def _table(rows: dict[int, dict], title: str) -> list[str]:
    present = [(k, name) for k, name in STEP_COLUMNS if any(r.get(k) is not None for r in rows.values())]
    lines = [title, "  step " + " ".join(f"{name:>16}" for _, name in present)]
    for step in sorted(rows):
        cells = " ".join(f"{rows[step][k]:16.4g}" if rows[step].get(k) is not None else f"{'-':>16}" for k, _ in present)
        lines.append(f"  {step:>4} {cells}")
    return lines


def _memory(rows: dict[int, dict]) -> list[str]:
    last = rows[max(rows)] if rows else {}
    mem = {k: v for k, v in last.items() if k.startswith("mem/")}
    if not mem:
        return []
    return ["memory per phase (last step, GiB): " + ", ".join(f"{k[4:]} {v:.2f}" for k, v in sorted(mem.items()))]


def render(outcome) -> str:
    """The whole report of a `run.Outcome`."""
    plan = outcome.plan
    lines = [layout_line(plan.config, plan.world)]
    if plan.reductions:
        lines.append("reduced to fit:")
        lines += [f"  {note}" for note in plan.reductions]
    lines.append(f"changed from the recipe ({len(plan.changes)} fields):")
    lines += [f"  {c.path}: {c.before!r} -> {c.after!r}   ({c.why})" for c in plan.changes]
    lines += _table(outcome.reference, "first run:") + _table(outcome.resumed, "resumed from the step-2 checkpoint:")
    lines += _memory(outcome.reference)
    lines.append("time: " + ", ".join(f"{name} {s:.0f} s" for name, s in outcome.seconds.items()))
    lines.append("checks:")
    lines += [c.line() for c in outcome.checks]
    lines.append("REHEARSAL PASSED" if outcome.passed else "REHEARSAL FAILED")
    return "\n".join(lines)
