"""Policy vs expert: response-length and log-probability distributions, distances and plots.

The paper's qualitative claim is that UniAPL's responses sit closer to the expert's than
GRPO's do. Given two JSONL files of (prompt, response) in the demonstration format (one with
the policy's responses, one with the expert's) this compares, over the prompts both files
share:
- response lengths (in tokens of `--model`'s tokenizer, or in words without a model);
- per-token log-probs of each response under `--model` (a Hugging Face directory), pooled
  over tokens, and their per-response means;
with Wasserstein-1 and Kolmogorov-Smirnov distances, PNG histograms and a JSON report.
A prompt may have several responses on either side (e.g. G policy samples).
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from megatron_uniapl.data.jsonl import DataError
from megatron_uniapl.data.schemas import Demonstration, read_demonstrations
from megatron_uniapl.eval.distances import ks_statistic, summary, wasserstein_1
from megatron_uniapl.rewards.text import count_words

logger = logging.getLogger(__name__)


@dataclass
class AnalyzeConfig:
    """What to compare and where to write."""

    policy: Path
    """JSONL of policy responses (demonstration format: prompt or messages, and response)."""
    expert: Path
    """JSONL of expert responses, same format."""
    out_dir: Path
    """Directory for report.json, lengths.png and, with a model, logprobs.png."""
    model: Path | None = None
    """Hugging Face model directory for tokens and log-probs; None: lengths in words only."""
    bins: int = 40
    """Histogram bins per plot."""


def shared_prompts(policy: list[Demonstration],
                   expert: list[Demonstration]) -> tuple[list[Demonstration], list[Demonstration]]:
    """The records of both sides whose prompt (all messages) the other side also has."""
    both = {d.messages for d in policy} & {d.messages for d in expert}
    return [d for d in policy if d.messages in both], [d for d in expert if d.messages in both]


def _compare(policy: np.ndarray, expert: np.ndarray) -> dict:
    return {"policy": summary(policy), "expert": summary(expert),
            "wasserstein_1": wasserstein_1(policy, expert), "ks": ks_statistic(policy, expert)}


def _histogram(path: Path, policy: np.ndarray, expert: np.ndarray, title: str, xlabel: str,
               bins: int) -> None:
    # The object-oriented API with the Agg canvas: no pyplot state, no display needed.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 4), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    edges = np.histogram_bin_edges(np.concatenate([policy, expert]), bins=bins)
    axes.hist(expert, bins=edges, alpha=0.6, density=True, label=f"expert (n={expert.size})")
    axes.hist(policy, bins=edges, alpha=0.6, density=True, label=f"policy (n={policy.size})")
    axes.set_title(title)
    axes.set_xlabel(xlabel)
    axes.set_ylabel("density")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, format="png")


def analyze(config: AnalyzeConfig) -> dict:
    """Write the report and plots; return the report (also saved as report.json)."""
    policy, expert = shared_prompts(read_demonstrations(config.policy),
                                    read_demonstrations(config.expert))
    if not policy:
        raise DataError(f"{config.policy} and {config.expert} have no prompt in common")
    out = config.out_dir
    out.mkdir(parents=True, exist_ok=True)
    report: dict = {"num_prompts": len({d.messages for d in policy}),
                    "num_policy_responses": len(policy), "num_expert_responses": len(expert),
                    "plots": {}}
    if config.model is None:
        unit = "words"
        lengths = {side: np.array([count_words(d.response) for d in records], dtype=np.float64)
                   for side, records in (("policy", policy), ("expert", expert))}
    else:
        from megatron_uniapl.eval.logprobs import LogProbScorer

        unit = "tokens"
        scorer = LogProbScorer(config.model)
        logprobs = {side: [scorer.score(d.messages, d.response) for d in records]
                    for side, records in (("policy", policy), ("expert", expert))}
        lengths = {side: np.array([lp.size for lp in per], dtype=np.float64)
                   for side, per in logprobs.items()}
        tokens = {side: np.concatenate(per) for side, per in logprobs.items()}
        means = {side: np.array([lp.mean() for lp in per if lp.size])
                 for side, per in logprobs.items()}
        report["logprob"] = {"model": str(config.model),
                             **_compare(tokens["policy"], tokens["expert"]),
                             "per_response_mean": _compare(means["policy"], means["expert"])}
        _histogram(out / "logprobs.png", tokens["policy"], tokens["expert"],
                   "per-token log-probability", "log p (nats)", config.bins)
        report["plots"]["logprobs"] = "logprobs.png"
    report["length"] = {"unit": unit, **_compare(lengths["policy"], lengths["expert"])}
    _histogram(out / "lengths.png", lengths["policy"], lengths["expert"], "response length",
               unit, config.bins)
    report["plots"]["lengths"] = "lengths.png"
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="analyze", description=__doc__.splitlines()[0])
    parser.add_argument("--policy", type=Path, required=True,
                        help="JSONL of policy responses (prompt or messages, response)")
    parser.add_argument("--expert", type=Path, required=True, help="JSONL of expert responses")
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument("--model", type=Path, default=None,
                        help="HF model directory for token lengths and log-probs")
    parser.add_argument("--bins", type=int, default=40)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    model_errors: tuple = ()
    if args.model is not None:
        from megatron_uniapl.convert.hf_io import CheckpointMismatchError

        model_errors = (CheckpointMismatchError, FileNotFoundError)
    try:
        report = analyze(AnalyzeConfig(args.policy, args.expert, args.out, args.model, args.bins))
    except (DataError, *model_errors) as e:
        print(f"analyze: {e}")
        return 2
    length = report["length"]
    print(f"{report['num_prompts']} prompts; length ({length['unit']}): policy mean "
          f"{length['policy']['mean']:.1f}, expert mean {length['expert']['mean']:.1f}, "
          f"W1 {length['wasserstein_1']:.3f}, KS {length['ks']:.3f}")
    if "logprob" in report:
        lp = report["logprob"]
        print(f"log-prob per token: policy mean {lp['policy']['mean']:.3f}, expert mean "
              f"{lp['expert']['mean']:.3f}, W1 {lp['wasserstein_1']:.3f}, KS {lp['ks']:.3f}")
    print(f"report: {args.out / 'report.json'}")
    return 0
