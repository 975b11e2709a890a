#!/bin/bash
# Submit the same recipe at several node counts (a scaling study); run on a login node, not sbatch:
#
#   bash slurm/scaling_study.sh [SBATCH_OPTIONS] RECIPE "1 2 4 8" [section.field=value ...]
#   DRY_RUN=1 bash slurm/scaling_study.sh ...       (print the sbatch commands only)
#
# SBATCH_OPTIONS are sbatch's own, each one word starting with "--" (e.g. --partition=gpu
# --gpus-per-node=4 --time=01:00:00); they come before the recipe. Each job runs slurm/train.sh with
# the recipe, the overrides, and what a study needs: its own run directory
# (logging.run_dir=<UNIAPL_STUDY_DIR>/nodes_<N>, default runs/scaling/<recipe name>), no
# checkpoints, and a metrics row for every step (logging.log_every=1). Short studies add e.g.
# train.steps=20. The recipe is checked at every node count before anything is queued. When the
# jobs are done,
#
#   python tools/scaling_report.py runs/scaling/<recipe name>
#
# tabulates tokens/s per GPU, step time per phase and scaling efficiency (the command is printed).
set -euo pipefail
repo="${UNIAPL_REPO:-$PWD}"
common="$repo/slurm/common.sh"
[[ -f "$common" ]] || { echo "error: $common not found; run from the repository root or set UNIAPL_REPO" >&2; exit 1; }
# shellcheck source=common.sh
source "$common"

sbatch_options=()
while [[ $# -gt 0 && "$1" == --* ]]; do
    sbatch_options+=("$1")
    shift
done
[[ $# -ge 2 ]] || uniapl_fail "usage: bash slurm/scaling_study.sh [--sbatch-option=value ...] RECIPE \"NODE_COUNTS\" [section.field=value ...]"
recipe="$1"
counts="$2"
shift 2
[[ -f "$repo/$recipe" || -f "$recipe" ]] || uniapl_problem "recipe $recipe not found (paths are relative to $repo)"
[[ -n "$counts" ]] || uniapl_problem "no node counts given"
for n in $counts; do
    [[ "$n" =~ ^[1-9][0-9]*$ ]] || uniapl_problem "node count '$n' is not a positive integer"
done
for option in "${sbatch_options[@]}"; do
    [[ "$option" != --nodes=* && "$option" != --nodes ]] ||
        uniapl_problem "$option: the node counts are the study's second argument, not an sbatch option"
done
if [[ "${DRY_RUN:-0}" != "1" ]]; then
    command -v sbatch >/dev/null || uniapl_problem "sbatch not found: run this on a Slurm login node"
fi
uniapl_stop_on_problems
name="$(basename "$recipe" .yaml)"
study="${UNIAPL_STUDY_DIR:-runs/scaling/$name}"
study_overrides=("logging.run_dir=$study/nodes_N" checkpoint.enabled=false checkpoint.resume=none logging.log_every=1)
# The recipe check at every node count, here on the login node, before anything is queued.
UNIAPL_REPO="$repo"
uniapl_python
UNIAPL_GPUS="$(uniapl_sbatch_default gpus-per-node "$repo/slurm/train.sh")"
for option in "${sbatch_options[@]}"; do
    [[ "$option" == --gpus-per-node=* ]] && UNIAPL_GPUS="${option#*=}"
done
UNIAPL_GPUS="${UNIAPL_GPUS_PER_NODE:-${UNIAPL_GPUS##*:}}"
[[ "$UNIAPL_GPUS" =~ ^[1-9][0-9]*$ ]] ||
    uniapl_problem "GPUs per node '$UNIAPL_GPUS': with --gpus-per-node=0 (a cluster without GPU GRES) set UNIAPL_GPUS_PER_NODE"
for UNIAPL_NNODES in $counts; do
    uniapl_check "$recipe" "$@" "${study_overrides[@]}"
done
uniapl_stop_on_problems
mkdir -p "$repo/logs"   # sbatch does not create the folder of --output; a job without it fails silently
for n in $counts; do
    uniapl_exec sbatch "${sbatch_options[@]}" --nodes="$n" --job-name="scaling-$name-n$n" slurm/train.sh "$recipe" "$@" \
        "logging.run_dir=$study/nodes_$n" checkpoint.enabled=false checkpoint.resume=none logging.log_every=1
done
echo "when the jobs are done: python tools/scaling_report.py $study" >&2
