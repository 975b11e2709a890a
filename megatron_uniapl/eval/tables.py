"""Markdown tables of an IFEval run, for pasting into notes and pull requests."""

from __future__ import annotations


def _pct(value: float) -> str:
    return f"{100 * value:.2f}"


def results_markdown(results: dict) -> str:
    """The headline accuracies and the per-type table (accuracies in percent) as markdown."""
    sampling = results.get("sampling", {})
    decoding = ("greedy" if sampling.get("temperature", 0.0) == 0.0
                else f"temperature {sampling['temperature']}, top-p {sampling.get('top_p')}, "
                     f"seed {sampling.get('seed')}")
    lines = [
        f"# IFEval: {results.get('model', '?')}",
        "",
        f"{results['num_prompts']} prompts, {results['num_instructions']} instructions from "
        f"`{results.get('eval_file', '?')}`; {decoding}, at most {sampling.get('max_tokens', '?')} "
        f"tokens; finish reasons {results.get('finish_reasons', {})}.",
        "",
        "| accuracy (%) | strict | loose |",
        "|---|---:|---:|",
        f"| prompt-level | {_pct(results['prompt_strict'])} | {_pct(results['prompt_loose'])} |",
        f"| instruction-level | {_pct(results['instruction_strict'])} | "
        f"{_pct(results['instruction_loose'])} |",
        "",
        "## Per instruction type",
        "",
        "| instruction | count | strict (%) | loose (%) |",
        "|---|---:|---:|---:|",
    ]
    for name, row in results["per_type"].items():
        lines.append(f"| {name} | {row['count']} | {_pct(row['strict'])} | {_pct(row['loose'])} |")
    return "\n".join(lines) + "\n"
