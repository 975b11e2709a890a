# shellcheck shell=bash
# Shared launch logic of the sbatch scripts in this folder (sourced, not run).
#
# The scripts only allocate and launch: one srun task per node, each running torchrun
# (through megatron_uniapl.launcher) with a static rendezvous whose store node 0 hosts (its node
# rank comes from SLURM_NODEID, so no node has to guess from its host name whether it is the host).
# Hyperparameters live in recipes; the scripts take the recipe and overrides as arguments.
# docs/cluster.md is the user's guide; in short:
#
# Environment (all optional):
#   UNIAPL_REPO            repository root (default: the folder sbatch was called from)
#   UNIAPL_VENV            virtual environment (default: $UNIAPL_REPO/.venv-gpu from `make setup-gpu`;
#                          $UNIAPL_REPO/.venv, the CPU test environment, only when that does not exist)
#   UNIAPL_CONTAINER       container image for pyxis/enroot (srun --container-image); replaces the venv
#   UNIAPL_CONTAINER_PYTHON  python inside the container (default: python)
#   UNIAPL_GPUS_PER_NODE   processes per node (default: the job's --gpus-per-node request, else the
#                          GPUs Slurm gave the node); required with --gpus-per-node=0 (CPU clusters)
#   UNIAPL_NODES           node count of a dry run outside a job (default: the script's #SBATCH --nodes)
#   UNIAPL_CPUS_PER_TASK   CPUs of each node's launcher task (default: all the job has on a node)
#   UNIAPL_RDZV_HOST       address of node 0 for the rendezvous (default: its Slurm node name)
#   UNIAPL_RDZV_PORT       rendezvous port (default: 20000 + job id mod 20000)
#   UNIAPL_SOCKET_IFNAME   network interface for NCCL and gloo (sets NCCL_SOCKET_IFNAME and
#                          GLOO_SOCKET_IFNAME where those are unset); other NCCL_*/GLOO_* pass through
#   UNIAPL_STOP_FILE       file whose existence asks the trainer to save and exit 75
#                          (default: logs/<job name>-<job id>.stop; touch it to stop a job cleanly)
#   UNIAPL_REQUEUE=0       after a stop on the time-limit signal, do not requeue the job
#   UNIAPL_STOP_GRACE_S    a USR1 this soon after the start is ignored (default 120: --time shorter
#                          than the --signal lead sends it at once, and requeueing then would loop)
#   UNIAPL_SKIP_CHECKS=1   skip the recipe and path check on the batch host (it imports the package)
#   DRY_RUN=1              check and print the launch command instead of running it; outside a job
#                          (on a login node) the shape comes from the script's #SBATCH lines
# Nothing here kills processes: a failed rank ends torchrun, which ends its srun task and the job.

UNIAPL_PROBLEMS=()
UNIAPL_STOPPED_EXIT=75   # the trainer's "stopped on request, checkpoint saved" exit status

uniapl_fail() {
    echo "error: $*" >&2
    exit 1
}

# Problems are collected and reported together (uniapl_stop_on_problems), so that one attempt
# shows everything that would stop the job.
uniapl_problem() {
    local p
    for p in "${UNIAPL_PROBLEMS[@]}"; do
        [[ "$p" == "$*" ]] && return 0   # the same problem found again (a study checks every node count)
    done
    UNIAPL_PROBLEMS+=("$*")
}

uniapl_stop_on_problems() {
    [[ ${#UNIAPL_PROBLEMS[@]} -eq 0 ]] && return 0
    local p
    for p in "${UNIAPL_PROBLEMS[@]}"; do
        echo "error: $p" >&2
    done
    echo "error: ${#UNIAPL_PROBLEMS[@]} problem(s) above; nothing was launched" >&2
    exit 1
}

uniapl_repo() {
    UNIAPL_REPO="${UNIAPL_REPO:-${SLURM_SUBMIT_DIR:-$PWD}}"
    [[ -f "$UNIAPL_REPO/megatron_uniapl/__init__.py" ]] ||
        uniapl_fail "UNIAPL_REPO=$UNIAPL_REPO is not the megatron_uniapl repository; submit from its root or set UNIAPL_REPO"
    UNIAPL_LOG_DIR="$UNIAPL_REPO/logs"
}

# Sets UNIAPL_PYTHON (the interpreter ranks run), UNIAPL_CHECK_PYTHON (the one that checks the
# recipe here; empty when it cannot run here) and UNIAPL_SRUN_ENV_ARGS (container flags).
uniapl_python() {
    UNIAPL_SRUN_ENV_ARGS=()
    UNIAPL_CHECK_PYTHON=()
    if [[ -n "${UNIAPL_CONTAINER:-}" ]]; then
        UNIAPL_PYTHON="${UNIAPL_CONTAINER_PYTHON:-python}"
        UNIAPL_SRUN_ENV_ARGS=(--container-image="$UNIAPL_CONTAINER" --container-mounts="$UNIAPL_REPO:$UNIAPL_REPO"
                              --container-workdir="$UNIAPL_REPO")
        return   # the container's python is not reachable from the batch host
    fi
    local venv="${UNIAPL_VENV:-$UNIAPL_REPO/.venv-gpu}"
    if [[ -z "${UNIAPL_VENV:-}" && ! -x "$venv/bin/python" && -x "$UNIAPL_REPO/.venv/bin/python" ]]; then
        venv="$UNIAPL_REPO/.venv"   # CPU rehearsals; GPU recipes stop at start-up without TE/GPU vLLM
        echo "note: no $UNIAPL_REPO/.venv-gpu ('make setup-gpu'); using $venv, the CPU test environment" >&2
    fi
    UNIAPL_PYTHON="$venv/bin/python"
    if [[ -x "$UNIAPL_PYTHON" ]]; then
        UNIAPL_CHECK_PYTHON=("$UNIAPL_PYTHON")
    else
        uniapl_problem "no virtual environment at $venv (run 'make setup-gpu' (or 'make setup' for CPU runs) in $UNIAPL_REPO, set UNIAPL_VENV, or set UNIAPL_CONTAINER)"
    fi
}

# The value of `#SBATCH --NAME=VALUE` in the script being run, or in FILE (the defaults a dry run
# outside a job uses).
uniapl_sbatch_default() {
    local line value=""
    while IFS= read -r line; do
        [[ "$line" == "#SBATCH --$1="* ]] && value="${line#*=}"
    done <"${2:-$0}"
    echo "$value"
}

# The smallest CPU count the job has on any of its nodes ("72(x2),36" -> 36).
uniapl_job_cpus_per_node() {
    local spec="${SLURM_JOB_CPUS_PER_NODE:-}" min="" part n parts
    IFS=, read -ra parts <<<"$spec"
    for part in "${parts[@]}"; do
        n="${part%%(*}"
        [[ "$n" =~ ^[0-9]+$ ]] || continue
        [[ -z "$min" || "$n" -lt "$min" ]] && min="$n"
    done
    echo "${min:-${SLURM_CPUS_ON_NODE:-}}"
}

# Sets UNIAPL_NNODES, UNIAPL_GPUS, UNIAPL_HEAD, UNIAPL_PORT, UNIAPL_CPUS, UNIAPL_JOB: from the job,
# or, for a dry run outside a job (a login node), from the script's #SBATCH lines.
uniapl_slurm_layout() {
    local gpus
    if [[ -n "${SLURM_JOB_ID:-}" ]]; then
        UNIAPL_JOB="$SLURM_JOB_ID"
        [[ -n "${SLURM_JOB_NODELIST:-}" ]] || uniapl_problem "SLURM_JOB_NODELIST is not set"
        UNIAPL_NNODES="${SLURM_JOB_NUM_NODES:-${SLURM_NNODES:-}}"
        # The request (--gpus-per-node) before what the node has: with --exclusive Slurm reports
        # every GPU of the node in SLURM_GPUS_ON_NODE, however many were asked for.
        gpus="${UNIAPL_GPUS_PER_NODE:-${SLURM_GPUS_PER_NODE:-${SLURM_GPUS_ON_NODE:-}}}"
        UNIAPL_CPUS="${UNIAPL_CPUS_PER_TASK:-$(uniapl_job_cpus_per_node)}"
    else
        [[ "${DRY_RUN:-0}" == "1" ]] ||
            uniapl_fail "not inside a Slurm job: submit with sbatch, or check on this host first with DRY_RUN=1 bash $0 ..."
        UNIAPL_JOB="JOBID"
        UNIAPL_NNODES="${UNIAPL_NODES:-$(uniapl_sbatch_default nodes)}"
        gpus="${UNIAPL_GPUS_PER_NODE:-$(uniapl_sbatch_default gpus-per-node)}"
        UNIAPL_CPUS="${UNIAPL_CPUS_PER_TASK:-}"
        echo "note: dry run outside a Slurm job: ${UNIAPL_NNODES:-?} node(s) x ${gpus:-?} GPUs from $0's #SBATCH lines" \
             "(UNIAPL_NODES and UNIAPL_GPUS_PER_NODE set another shape)" >&2
    fi
    [[ "$UNIAPL_NNODES" =~ ^[1-9][0-9]*$ ]] || uniapl_problem "node count '$UNIAPL_NNODES' is not a positive integer"
    gpus="${gpus##*:}"   # "h100:8" -> "8"
    if [[ -z "$gpus" || "$gpus" == 0 ]]; then
        uniapl_problem "no GPUs in this job (--gpus-per-node=0 or no GPU request): set UNIAPL_GPUS_PER_NODE to the processes per node (a cluster without GPU GRES, see docs/cluster.md)"
    elif ! [[ "$gpus" =~ ^[1-9][0-9]*$ ]]; then
        uniapl_problem "GPUs per node '$gpus' is not a number (set UNIAPL_GPUS_PER_NODE)"
    fi
    UNIAPL_GPUS="$gpus"
    [[ -z "$UNIAPL_CPUS" || "$UNIAPL_CPUS" =~ ^[1-9][0-9]*$ ]] ||
        uniapl_problem "CPUs per task '$UNIAPL_CPUS' is not a positive integer (set UNIAPL_CPUS_PER_TASK)"
    if [[ -n "${SLURM_JOB_NODELIST:-}" ]]; then
        command -v scontrol >/dev/null || uniapl_fail "scontrol not found: not on a Slurm host"
        # Read every host (no `| head`: with pipefail, head closing the pipe early kills the job
        # with SIGPIPE when the node list is long).
        local hosts
        mapfile -t hosts < <(scontrol show hostnames "$SLURM_JOB_NODELIST")
        UNIAPL_HEAD="${hosts[0]:-}"
        [[ -n "$UNIAPL_HEAD" ]] || uniapl_problem "scontrol show hostnames '$SLURM_JOB_NODELIST' gave no host"
    else
        UNIAPL_HEAD="NODE0"
    fi
    UNIAPL_HEAD="${UNIAPL_RDZV_HOST:-$UNIAPL_HEAD}"
    if [[ -n "${UNIAPL_RDZV_PORT:-}" ]]; then
        UNIAPL_PORT="$UNIAPL_RDZV_PORT"
    elif [[ "$UNIAPL_JOB" =~ ^[0-9]+$ ]]; then
        UNIAPL_PORT="$((20000 + UNIAPL_JOB % 20000))"
    else
        UNIAPL_PORT="PORT"
    fi
}

# Variables every rank needs, exported (srun --export=ALL passes them on); a dry run prints them.
uniapl_launch_env() {
    # Megatron's tensor-parallel communication overlap relies on one CUDA work queue per device.
    export CUDA_DEVICE_MAX_CONNECTIONS="${CUDA_DEVICE_MAX_CONNECTIONS:-1}"
    if [[ -n "${UNIAPL_SOCKET_IFNAME:-}" ]]; then
        export NCCL_SOCKET_IFNAME="${NCCL_SOCKET_IFNAME:-$UNIAPL_SOCKET_IFNAME}"
        export GLOO_SOCKET_IFNAME="${GLOO_SOCKET_IFNAME:-$UNIAPL_SOCKET_IFNAME}"
    fi
    export UNIAPL_STOP_FILE="${UNIAPL_STOP_FILE:-$UNIAPL_LOG_DIR/${SLURM_JOB_NAME:-uniapl}-$UNIAPL_JOB.stop}"
    local name shown=()
    for name in $(compgen -e | LC_ALL=C sort); do
        [[ "$name" == CUDA_DEVICE_MAX_CONNECTIONS || "$name" == UNIAPL_STOP_FILE || "$name" == NCCL_* ||
           "$name" == GLOO_* || "$name" == TORCH_NCCL_* ]] && shown+=("$name=${!name}")
    done
    if [[ "${DRY_RUN:-0}" == "1" ]]; then
        printf 'ENV:'
        printf ' %q' "${shown[@]}"
        printf '\n'
    else
        echo "launch env: ${shown[*]}" >&2
    fi
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

# uniapl_check RECIPE [overrides...]: resolve the recipe and check its paths on this host; every
# problem the check finds joins UNIAPL_PROBLEMS.
uniapl_check() {
    local recipe="$1" line
    shift
    if [[ ! -f "$UNIAPL_REPO/$recipe" && ! -f "$recipe" ]]; then
        uniapl_problem "recipe $recipe not found (paths are relative to $UNIAPL_REPO)"
        return 0
    fi
    if [[ "${UNIAPL_SKIP_CHECKS:-0}" == "1" ]]; then
        echo "note: UNIAPL_SKIP_CHECKS=1; the recipe and its paths were not checked before launch" >&2
        return 0
    fi
    if [[ -n "${UNIAPL_CONTAINER:-}" ]]; then
        echo "note: container run; recipe and path checks happen inside the job" >&2
        return 0
    fi
    [[ ${#UNIAPL_CHECK_PYTHON[@]} -gt 0 ]] || return 0   # no venv: already a problem
    local world=()
    [[ "$UNIAPL_NNODES" =~ ^[0-9]+$ && "$UNIAPL_GPUS" =~ ^[0-9]+$ ]] && world=(--world "$((UNIAPL_NNODES * UNIAPL_GPUS))")
    local output
    output="$(cd "$UNIAPL_REPO" && "${UNIAPL_CHECK_PYTHON[@]}" -m megatron_uniapl.launch_check \
        "${world[@]}" --config "$recipe" "$@" 2>&1)" && return 0
    while IFS= read -r line; do
        [[ "$line" == "error: "* ]] && uniapl_problem "${line#error: }"
    done <<<"$output"
    [[ "$output" == *"error: "* ]] || uniapl_problem "the recipe check failed: $output"
}

# The batch shell's side of stopping: a signal (USR1 before the time limit, TERM from scancel)
# touches the stop file, and the trainer saves at its next step boundary and exits 75.
uniapl_request_stop() {
    UNIAPL_WAIT_INTERRUPTED=1
    local grace="${UNIAPL_STOP_GRACE_S:-120}"
    if [[ "$1" == USR1 && $((SECONDS - UNIAPL_LAUNCH_START)) -lt "$grace" ]]; then
        echo "stop: SIGUSR1 $((SECONDS - UNIAPL_LAUNCH_START)) s after the start ignored: the job's --time is" \
             "shorter than the signal's lead (--signal=B:USR1@...), or it was sent by hand within UNIAPL_STOP_GRACE_S=$grace s" >&2
        return 0
    fi
    [[ -n "$UNIAPL_STOP_SIGNAL" ]] || UNIAPL_STOP_SIGNAL="$1"
    echo "stop: SIG$1 received after $((SECONDS - UNIAPL_LAUNCH_START)) s; asking the trainer to save and stop ($UNIAPL_STOP_FILE)" >&2
    touch "$UNIAPL_STOP_FILE"
}

# uniapl_run_stoppable CMD...: run the launch in the background so that the batch shell's traps run
# while it does (bash defers traps until a foreground command ends); sets UNIAPL_RC (75 for a clean
# stop, which the launcher reports through $UNIAPL_STOP_FILE.stopped).
uniapl_run_stoppable() {
    UNIAPL_STOP_SIGNAL=""
    UNIAPL_LAUNCH_START=$SECONDS
    mkdir -p "$(dirname "$UNIAPL_STOP_FILE")"
    rm -f "$UNIAPL_STOP_FILE" "$UNIAPL_STOP_FILE.stopped"   # left by an earlier attempt of a requeued job
    trap 'uniapl_request_stop USR1' USR1
    trap 'uniapl_request_stop TERM' TERM
    "$@" &
    local pid=$!
    while :; do
        UNIAPL_WAIT_INTERRUPTED=0
        if wait "$pid"; then UNIAPL_RC=0; else UNIAPL_RC=$?; fi
        # A trap interrupts `wait`; wait again (it returns the status once the launch has ended).
        [[ "$UNIAPL_WAIT_INTERRUPTED" == 1 ]] || break
    done
    trap - USR1 TERM
    # The launcher records a clean stop (every worker exited 75) here and exits 0.
    [[ "$UNIAPL_RC" == 0 && -e "$UNIAPL_STOP_FILE.stopped" ]] && UNIAPL_RC=$UNIAPL_STOPPED_EXIT
    rm -f "$UNIAPL_STOP_FILE" "$UNIAPL_STOP_FILE.stopped"
}

# After the launch: a stop on the time-limit signal requeues the job (it resumes from the
# checkpoint the trainer just saved); any other stop asks the user to resubmit.
uniapl_finish() {
    if [[ "$UNIAPL_RC" != "$UNIAPL_STOPPED_EXIT" ]]; then
        [[ "$UNIAPL_RC" == 0 ]] || echo "error: the launch ended with exit status $UNIAPL_RC" >&2
        exit "$UNIAPL_RC"
    fi
    if [[ "$UNIAPL_STOP_SIGNAL" == USR1 && "${UNIAPL_REQUEUE:-1}" != 0 ]]; then
        if [[ "$(scontrol show job "$SLURM_JOB_ID" 2>/dev/null)" == *"Requeue=1"* ]]; then
            # Said first: Slurm ends this shell as soon as the requeue is accepted.
            echo "stop: checkpoint saved; requeueing job $SLURM_JOB_ID, it resumes from that checkpoint" >&2
            scontrol requeue "$SLURM_JOB_ID" && exit 0
        fi
        echo "error: job $SLURM_JOB_ID could not be requeued (submitted with --no-requeue?)" >&2
    fi
    echo "stop: stopped on request with a checkpoint saved; submit the same command again to resume" >&2
    exit "$UNIAPL_STOPPED_EXIT"
}

# uniapl_train RECIPE [overrides...]: one torchrun per node running the training loop.
uniapl_train() {
    [[ $# -ge 1 ]] || uniapl_fail "usage: sbatch $0 RECIPE [section.field=value ...]"
    uniapl_repo
    uniapl_python
    uniapl_slurm_layout
    uniapl_check "$@"
    uniapl_stop_on_problems
    local recipe="$1"
    shift
    uniapl_launch_env
    local cpus=()
    [[ -n "$UNIAPL_CPUS" ]] && cpus=(--cpus-per-task="$UNIAPL_CPUS")
    echo "launch: job $UNIAPL_JOB, $UNIAPL_NNODES node(s) x $UNIAPL_GPUS GPUs, rendezvous $UNIAPL_HEAD:$UNIAPL_PORT" \
         "(hosted by node 0), ${UNIAPL_CPUS:-default} CPUs per node, recipe $recipe" >&2
    # megatron_uniapl.launcher is torchrun plus two things: the node rank (and with it the node
    # hosting the rendezvous store) is Slurm's SLURM_NODEID, and the trainer's "stopped" exit 75,
    # which torchrun and srun would turn into a failure, is recorded in $UNIAPL_STOP_FILE.stopped.
    local launch=(srun --nodes="$UNIAPL_NNODES" --ntasks-per-node=1 "${cpus[@]}" --kill-on-bad-exit=1
        --export=ALL --chdir="$UNIAPL_REPO" "${UNIAPL_SRUN_ENV_ARGS[@]}"
        "$UNIAPL_PYTHON" -m megatron_uniapl.launcher
        --nnodes="$UNIAPL_NNODES" --nproc-per-node="$UNIAPL_GPUS"
        --rdzv-backend=static --master-addr="$UNIAPL_HEAD" --master-port="$UNIAPL_PORT" --max-restarts=0
        -m megatron_uniapl.train --config "$recipe" "$@")
    if [[ "${DRY_RUN:-0}" == "1" ]]; then
        uniapl_exec "${launch[@]}"
        return 0
    fi
    uniapl_run_stoppable "${launch[@]}"
    uniapl_finish
}
