#!/bin/bash
#SBATCH --job-name=uniapl-convert
#SBATCH --nodes=1
#SBATCH --ntasks=1
#SBATCH --exclusive
#SBATCH --mem=0
#SBATCH --time=04:00:00
#SBATCH --output=logs/%x-%j.out
# A checkpoint conversion job (tools/convert_hf.py) on one node. The tool starts its own TP x PP
# worker processes, each holding one shard, so one task is launched with every CPU and all the
# memory of the node (--exclusive, --mem=0: any node size fits, none is too small to start); the
# arguments are the tool's:
#
#   sbatch slurm/convert_hf.sh import --hf-dir HF --out-dir MCORE --tp 8 --pp 1
#   sbatch slurm/convert_hf.sh export --mcore-dir MCORE --out-dir HF2 --tp 8
#   sbatch slurm/convert_hf.sh verify --hf-dir HF --mcore-dir MCORE --tp 2
#   DRY_RUN=1 bash slurm/convert_hf.sh import ...     (on a login node too: check, print the launch command)
set -euo pipefail
common="${UNIAPL_REPO:-${SLURM_SUBMIT_DIR:-$PWD}}/slurm/common.sh"
[[ -f "$common" ]] || { echo "error: $common not found; submit from the repository root or set UNIAPL_REPO" >&2; exit 1; }
# shellcheck source=common.sh
source "$common"

uniapl_repo
uniapl_python
if [[ -z "${SLURM_JOB_ID:-}" && "${DRY_RUN:-0}" != "1" ]]; then
    uniapl_fail "not inside a Slurm job: submit with sbatch, or check on this host first with DRY_RUN=1 bash $0 ..."
fi
[[ $# -ge 1 ]] || uniapl_fail "usage: sbatch slurm/convert_hf.sh {import|export|verify} ARGS... (see tools/convert_hf.py --help)"
case "$1" in
    import | export | verify) ;;
    *) uniapl_fail "unknown conversion '$1': expected import, export or verify" ;;
esac
args=("$@")
for ((i = 1; i < ${#args[@]}; i++)); do
    value="${args[i + 1]:-}"
    case "${args[i]}" in
        --hf-dir)
            [[ "$1" == export || -f "$value/config.json" ]] ||
                uniapl_problem "--hf-dir $value: no config.json there (a Hugging Face Qwen3 directory is expected)" ;;
        --mcore-dir)
            [[ -d "$value" ]] || uniapl_problem "--mcore-dir $value: not a directory" ;;
        --out-dir)
            [[ -d "$(dirname "$value")" ]] || uniapl_problem "--out-dir $value: its parent folder does not exist" ;;
    esac
done
uniapl_stop_on_problems
node_cpus="${UNIAPL_CPUS_PER_TASK:-${SLURM_CPUS_ON_NODE:-}}"
cpu_args=()
[[ -n "$node_cpus" ]] && cpu_args=(--cpus-per-task="$node_cpus")
echo "launch: job ${SLURM_JOB_ID:-JOBID}, conversion '$1' on $(hostname), ${node_cpus:-default} CPUs" >&2
uniapl_exec srun --nodes=1 --ntasks=1 "${cpu_args[@]}" --export=ALL --chdir="$UNIAPL_REPO" "${UNIAPL_SRUN_ENV_ARGS[@]}" \
    "$UNIAPL_PYTHON" tools/convert_hf.py "$@"
