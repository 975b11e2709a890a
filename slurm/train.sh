#!/bin/bash
#SBATCH --job-name=uniapl-train
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --exclusive
#SBATCH --mem=0
#SBATCH --time=24:00:00
#SBATCH --output=logs/%x-%j.out
#SBATCH --open-mode=append
#SBATCH --signal=B:USR1@600
#SBATCH --requeue
# Any recipe on any number of nodes: the generic launcher (scaling_study.sh submits it).
#
#   sbatch slurm/train.sh RECIPE [section.field=value ...]      (from the repository root)
#   DRY_RUN=1 bash slurm/train.sh ...      (on a login node too: check the recipe, print the launch)
#
# RECIPE is required; overrides are passed to the recipe as given. The node count
# is the allocation's (sbatch --nodes=N overrides the default above). The log is
# logs/<job name>-<job id>.out; before the time limit the job saves a checkpoint and requeues
# itself. docs/cluster.md explains the settings (slurm/common.sh lists them).
set -euo pipefail
common="${UNIAPL_REPO:-${SLURM_SUBMIT_DIR:-$PWD}}/slurm/common.sh"
[[ -f "$common" ]] || { echo "error: $common not found; submit from the repository root or set UNIAPL_REPO" >&2; exit 1; }
# shellcheck source=common.sh
source "$common"

[[ $# -ge 1 && "$1" != *=* ]] || uniapl_fail "usage: sbatch [--nodes=N] slurm/train.sh RECIPE [section.field=value ...]"
uniapl_train "$@"
