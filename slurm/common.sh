# Shared launch logic of the sbatch scripts in this folder (sourced, not run).
#
# The scripts only allocate and launch: one srun task per node, each running torchrun
# (python -m torch.distributed.run) with the rendezvous on the first node of the allocation.
# Hyperparameters live in recipes; the scripts take the recipe and overrides as arguments.
#
# Environment (all optional):
#   UNIAPL_REPO            repository root (default: the folder sbatch was called from)
#   UNIAPL_VENV            virtual environment (default: $UNIAPL_REPO/.venv-gpu from `make setup-gpu`;
#                          $UNIAPL_REPO/.venv, the CPU test environment, only when that does not exist)
#   UNIAPL_CONTAINER       container image for pyxis/enroot (srun --container-image); replaces the venv
#   UNIAPL_CONTAINER_PYTHON  python inside the container (default: python)
#   UNIAPL_GPUS_PER_NODE   GPUs per node (default: from Slurm, else 8)
#   UNIAPL_RDZV_PORT       rendezvous port (default: 20000 + job id mod 20000)
#   UNIAPL_SKIP_CHECKS=1   skip the recipe and path check on the batch host (it imports the package)
#   DRY_RUN=1              check and print the launch command instead of running it
# Nothing here kills processes: a failed rank ends torchrun, which ends its srun task and the job.

uniapl_fail() {
    echo "error: $*" >&2
    exit 1
}

uniapl_repo() {
    UNIAPL_REPO="${UNIAPL_REPO:-${SLURM_SUBMIT_DIR:-$PWD}}"
    [[ -f "$UNIAPL_REPO/megatron_uniapl/__init__.py" ]] ||
        uniapl_fail "UNIAPL_REPO=$UNIAPL_REPO is not the megatron_uniapl repository; submit from its root or set UNIAPL_REPO"
}

# Sets UNIAPL_PYTHON (the interpreter ranks run) and UNIAPL_SRUN_ENV_ARGS (container flags).
uniapl_python() {
    UNIAPL_SRUN_ENV_ARGS=()
    if [[ -n "${UNIAPL_CONTAINER:-}" ]]; then
        UNIAPL_PYTHON="${UNIAPL_CONTAINER_PYTHON:-python}"
        UNIAPL_SRUN_ENV_ARGS=(--container-image="$UNIAPL_CONTAINER" --container-mounts="$UNIAPL_REPO:$UNIAPL_REPO"
                              --container-workdir="$UNIAPL_REPO")
        UNIAPL_CHECK_PYTHON=()   # the container's python is not reachable from the batch host
        return
    fi
    local venv="${UNIAPL_VENV:-$UNIAPL_REPO/.venv-gpu}"
    if [[ -z "${UNIAPL_VENV:-}" && ! -x "$venv/bin/python" && -x "$UNIAPL_REPO/.venv/bin/python" ]]; then
        venv="$UNIAPL_REPO/.venv"   # CPU rehearsals; GPU recipes stop at start-up without TE/GPU vLLM
        echo "note: no $UNIAPL_REPO/.venv-gpu ('make setup-gpu'); using $venv, the CPU test environment" >&2
    fi
    [[ -x "$venv/bin/python" ]] ||
        uniapl_fail "no virtual environment at $venv (run 'make setup-gpu' in $UNIAPL_REPO, set UNIAPL_VENV, or set UNIAPL_CONTAINER)"
    UNIAPL_PYTHON="$venv/bin/python"
    UNIAPL_CHECK_PYTHON=("$UNIAPL_PYTHON")
}

uniapl_slurm_layout() {
    [[ -n "${SLURM_JOB_ID:-}" ]] || uniapl_fail "SLURM_JOB_ID is not set: submit with sbatch (or set DRY_RUN=1 and fake SLURM_* variables)"
    [[ -n "${SLURM_JOB_NODELIST:-}" ]] || uniapl_fail "SLURM_JOB_NODELIST is not set"
    command -v scontrol >/dev/null || uniapl_fail "scontrol not found: not on a Slurm host"
    UNIAPL_NNODES="${SLURM_JOB_NUM_NODES:-${SLURM_NNODES:-}}"
    [[ "$UNIAPL_NNODES" =~ ^[1-9][0-9]*$ ]] || uniapl_fail "SLURM_JOB_NUM_NODES='$UNIAPL_NNODES' is not a node count"
    local gpus="${UNIAPL_GPUS_PER_NODE:-${SLURM_GPUS_ON_NODE:-${SLURM_GPUS_PER_NODE:-8}}}"
    gpus="${gpus##*:}"   # "h100:8" -> "8"
    [[ "$gpus" =~ ^[1-9][0-9]*$ ]] || uniapl_fail "GPUs per node '$gpus' is not a number (set UNIAPL_GPUS_PER_NODE)"
    UNIAPL_GPUS="$gpus"
    # Read every host (no `| head`: with pipefail, head closing the pipe early kills the job
    # with SIGPIPE when the node list is long).
    local hosts
    mapfile -t hosts < <(scontrol show hostnames "$SLURM_JOB_NODELIST")
    UNIAPL_HEAD="${hosts[0]:-}"
    [[ -n "$UNIAPL_HEAD" ]] || uniapl_fail "scontrol show hostnames '$SLURM_JOB_NODELIST' gave no host"
    UNIAPL_PORT="${UNIAPL_RDZV_PORT:-$((20000 + SLURM_JOB_ID % 20000))}"
}

# Runs (or, with DRY_RUN=1, prints) the command given as arguments.
uniapl_exec() {
    if [[ "${DRY_RUN:-0}" == "1" ]]; then
        printf 'LAUNCH:'
        printf ' %q' "$@"
        printf '\n'
        return 0
    fi
    "$@"
}

# uniapl_check RECIPE [overrides...]: resolve the recipe and check its paths on this host.
uniapl_check() {
    local recipe="$1"
    shift
    [[ -f "$UNIAPL_REPO/$recipe" || -f "$recipe" ]] || uniapl_fail "recipe $recipe not found (paths are relative to $UNIAPL_REPO)"
    if [[ "${UNIAPL_SKIP_CHECKS:-0}" == "1" ]]; then
        echo "note: UNIAPL_SKIP_CHECKS=1; the recipe and its paths were not checked before launch" >&2
        return 0
    fi
    if [[ ${#UNIAPL_CHECK_PYTHON[@]} -eq 0 ]]; then
        echo "note: container run; recipe and path checks happen inside the job" >&2
        return 0
    fi
    (cd "$UNIAPL_REPO" && "${UNIAPL_CHECK_PYTHON[@]}" -m megatron_uniapl.launch_check \
        --world "$((UNIAPL_NNODES * UNIAPL_GPUS))" --config "$recipe" "$@") >&2 ||
        uniapl_fail "the recipe or its paths are not usable (see above); nothing was launched"
}

# uniapl_train RECIPE [overrides...]: one torchrun per node running the training loop.
uniapl_train() {
    [[ $# -ge 1 ]] || uniapl_fail "usage: sbatch $0 RECIPE [section.field=value ...]"
    uniapl_repo
    uniapl_python
    uniapl_slurm_layout
    uniapl_check "$@"
    local recipe="$1"
    shift
    echo "launch: job $SLURM_JOB_ID, $UNIAPL_NNODES node(s) x $UNIAPL_GPUS GPUs, rendezvous $UNIAPL_HEAD:$UNIAPL_PORT, recipe $recipe" >&2
    uniapl_exec srun --nodes="$UNIAPL_NNODES" --ntasks-per-node=1 --kill-on-bad-exit=1 --chdir="$UNIAPL_REPO" \
        "${UNIAPL_SRUN_ENV_ARGS[@]}" \
        "$UNIAPL_PYTHON" -m torch.distributed.run \
        --nnodes="$UNIAPL_NNODES" --nproc-per-node="$UNIAPL_GPUS" \
        --rdzv-backend=c10d --rdzv-endpoint="$UNIAPL_HEAD:$UNIAPL_PORT" --rdzv-id="$SLURM_JOB_ID" \
        --max-restarts=0 \
        -m megatron_uniapl.train --config "$recipe" "$@"
}
