#!/bin/bash
#SBATCH --job-name=qwen3-0p6b-uniapl
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --exclusive
#SBATCH --mem=0
#SBATCH --time=12:00:00
#SBATCH --output=logs/%x-%j.out
#SBATCH --open-mode=append
#SBATCH --signal=B:USR1@300
#SBATCH --requeue
# Qwen3-0.6B UniAPL on one 8-GPU node.
#
#   sbatch slurm/qwen3_0p6b_uniapl.sh [RECIPE] [section.field=value ...]      (from the repository root)
#   DRY_RUN=1 bash slurm/qwen3_0p6b_uniapl.sh ...      (on a login node too: check the recipe, print the launch)
#
# RECIPE defaults to recipes/qwen3_0p6b.yaml; overrides are passed to the recipe as given. The node count
# is the allocation's (sbatch --nodes=N overrides the default above). The log is
# logs/<job name>-<job id>.out; before the time limit the job saves a checkpoint and requeues
# itself. docs/cluster.md explains the settings (slurm/common.sh lists them).
set -euo pipefail
common="${UNIAPL_REPO:-${SLURM_SUBMIT_DIR:-$PWD}}/slurm/common.sh"
[[ -f "$common" ]] || { echo "error: $common not found; submit from the repository root or set UNIAPL_REPO" >&2; exit 1; }
# shellcheck source=common.sh
source "$common"

recipe="recipes/qwen3_0p6b.yaml"
if [[ $# -ge 1 && "$1" != *=* ]]; then
    recipe="$1"
    shift
fi
uniapl_train "$recipe" "$@"
