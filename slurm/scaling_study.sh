#!/bin/bash
# Submit the same recipe at several node counts (a scaling study); run on a login node, not sbatch:
#
#   bash slurm/scaling_study.sh RECIPE "1 2 4 8" [section.field=value ...]
#   DRY_RUN=1 bash slurm/scaling_study.sh ...       (print the sbatch commands only)
#
# Each job runs slurm/train.sh with the recipe, the overrides, and its own run directory
# (logging.run_dir=<UNIAPL_STUDY_DIR>/nodes_<N>, default runs/scaling/<recipe name>) with
# checkpoints off, so that afterwards
#
#   python tools/scaling_report.py <UNIAPL_STUDY_DIR>/nodes_*
#
# tabulates tokens/s per GPU, step time per phase and scaling efficiency. Short studies add e.g.
# train.steps=20 as an override.
set -euo pipefail
repo="${UNIAPL_REPO:-$PWD}"
common="$repo/slurm/common.sh"
[[ -f "$common" ]] || { echo "error: $common not found; run from the repository root or set UNIAPL_REPO" >&2; exit 1; }
# shellcheck source=common.sh
source "$common"

[[ $# -ge 2 ]] || uniapl_fail "usage: bash slurm/scaling_study.sh RECIPE \"NODE_COUNTS\" [section.field=value ...]"
recipe="$1"
counts="$2"
shift 2
[[ -f "$repo/$recipe" || -f "$recipe" ]] || uniapl_fail "recipe $recipe not found (paths are relative to $repo)"
[[ -n "$counts" ]] || uniapl_fail "no node counts given"
for n in $counts; do
    [[ "$n" =~ ^[1-9][0-9]*$ ]] || uniapl_fail "node count '$n' is not a positive integer"
done
if [[ "${DRY_RUN:-0}" != "1" ]]; then
    command -v sbatch >/dev/null || uniapl_fail "sbatch not found: run this on a Slurm login node"
fi
name="$(basename "$recipe" .yaml)"
study="${UNIAPL_STUDY_DIR:-runs/scaling/$name}"
for n in $counts; do
    uniapl_exec sbatch --nodes="$n" --job-name="scaling-$name-n$n" slurm/train.sh "$recipe" "$@" \
        "logging.run_dir=$study/nodes_$n" checkpoint.every=0 checkpoint.resume=none
done
