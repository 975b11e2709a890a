#!/usr/bin/env bash
# A real Slurm (Debian's slurm-wlm, 22.05+) on this machine, for the project's own slow tests:
# one controller and 1 or 2 node daemons on loopback addresses, each node with 2 CPUs and two
# placeholder GPUs (so that unmodified `#SBATCH --gpus-per-node=N` scripts can be scheduled).
#
#   scripts/slurm_test_cluster.sh start [NODES]   start it (NODES: 1 or 2, default 2); prints SLURM_CONF=...
#   scripts/slurm_test_cluster.sh stop            cancel its jobs, stop exactly the daemons it started
#   scripts/slurm_test_cluster.sh status          print whether it runs (exit 0) or not (exit 1)
#
# Needs root: slurmd runs as root, and node names get one /etc/hosts line each (removed on stop).
# Everything else lives in one state folder (config, munge key and socket, spool, logs, PIDs);
# nothing under /etc/slurm or /etc/munge is read or changed, and the daemons of a Slurm already
# installed on the machine are left alone (other ports, other socket). Packages are installed only
# when asked (UNIAPL_SLURM_INSTALL=1, apt-get), never by `make test` on its own.
#
# Environment:
#   UNIAPL_SLURM_DIR      state folder (default: ${TMPDIR:-/tmp}/uniapl-test-slurm)
#   UNIAPL_SLURM_INSTALL  1 = apt-get install the missing packages
#   UNIAPL_SLURM_PORT     controller port; nodes use the next ones (default 16817)
#
# Exit status: 0 done; 3 this machine cannot run it (not root, packages missing, install failed),
# with the reason on stderr; 1 anything else.
set -euo pipefail

STATE="${UNIAPL_SLURM_DIR:-${TMPDIR:-/tmp}/uniapl-test-slurm}"
PORT="${UNIAPL_SLURM_PORT:-16817}"
PACKAGES=(slurmctld slurmd slurm-client munge)
HOSTS_TAG="# uniapl-test-slurm"
export SLURM_CONF="$STATE/slurm.conf"

cannot() { echo "slurm_test_cluster: cannot run here: $*" >&2; exit 3; }
fail() { echo "slurm_test_cluster: error: $*" >&2; exit 1; }
say() { echo "slurm_test_cluster: $*" >&2; }

have_binaries() {
    local b
    for b in slurmctld slurmd sbatch scontrol munged mungekey; do
        command -v "$b" >/dev/null 2>&1 || [[ -x "/usr/sbin/$b" ]] || return 1
    done
}

install_packages() {
    have_binaries && return 0
    [[ "${UNIAPL_SLURM_INSTALL:-0}" == "1" ]] ||
        cannot "Slurm is not installed (packages: ${PACKAGES[*]}); set UNIAPL_SLURM_INSTALL=1 to install them with apt-get"
    command -v apt-get >/dev/null || cannot "no apt-get to install ${PACKAGES[*]}"
    local start=$SECONDS
    say "installing ${PACKAGES[*]} with apt-get"
    # --no-install-recommends: 8 packages instead of a mail server and documentation.
    { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${PACKAGES[@]}"; } \
        >"$STATE/apt.log" 2>&1 || cannot "apt-get install ${PACKAGES[*]} failed (log: $STATE/apt.log)"
    say "installed in $((SECONDS - start)) s"
    have_binaries || cannot "installed ${PACKAGES[*]} but the daemons are still missing"
}

# The process still runs the program it was started as (a PID can be reused after it exits).
pid_runs() {
    local pid="$1" program="$2"
    [[ -r "/proc/$pid/cmdline" ]] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$program"
}

running() {
    [[ -f "$STATE/pids" ]] || return 1
    local pid program
    while read -r pid program; do
        pid_runs "$pid" "$program" && return 0
    done <"$STATE/pids"
    return 1
}

# Wait for a daemon's PID file, then record "PID PROGRAM" for `stop`.
record_pid() {
    local file="$1" program="$2" i
    for ((i = 0; i < 100; i++)); do
        if [[ -s "$file" ]]; then
            echo "$(<"$file") $program" >>"$STATE/pids"
            return 0
        fi
        sleep 0.1
    done
    fail "$program did not start (no $file); see $STATE/log"
}

write_config() {
    local nodes="$1" i names
    names="uniapl-n[1-$nodes]"
    [[ "$nodes" == 1 ]] && names="uniapl-n1"
    cat >"$SLURM_CONF" <<EOF
# Written by scripts/slurm_test_cluster.sh: a loopback test cluster.
ClusterName=uniapltest
SlurmctldHost=localhost
SlurmctldPort=$PORT
SlurmUser=root
AuthType=auth/munge
AuthInfo=socket=$STATE/munge/munge.socket
CredType=cred/munge
StateSaveLocation=$STATE/ctld
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdPidFile=$STATE/run/slurmd-%n.pid
SlurmdSpoolDir=$STATE/spool/%n
SlurmdLogFile=$STATE/log/slurmd-%n.log
# No cgroups in containers: track processes by parent, bind nothing.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
# The nodes are declared with 2 CPUs and 2 GPUs whatever the machine has.
SlurmdParameters=config_overrides
ReturnToService=2
GresTypes=gpu
# Completed jobs stay visible to scontrol for 10 minutes; sacct -c reads the text job log.
MinJobAge=600
JobCompType=jobcomp/filetxt
JobCompLoc=$STATE/log/jobcomp.txt
AccountingStorageType=accounting_storage/none
KillWait=30
InactiveLimit=0
EOF
    for ((i = 1; i <= nodes; i++)); do
        echo "NodeName=uniapl-n$i NodeAddr=127.0.0.$((i + 1)) Port=$((PORT + i)) CPUs=2 RealMemory=8000 Gres=gpu:2 State=UNKNOWN" >>"$SLURM_CONF"
    done
    echo "PartitionName=debug Nodes=$names Default=YES MaxTime=INFINITE State=UP" >>"$SLURM_CONF"
    # Slurm 22.05 drops GPUs declared by count only; placeholder files stand in for devices.
    touch "$STATE/dev/gpu0" "$STATE/dev/gpu1"
    echo "NodeName=$names Name=gpu File=$STATE/dev/gpu[0-1]" >"$STATE/gres.conf"
}

# One /etc/hosts line per node, at the node's own loopback address (not 127.0.0.1: a node name
# that does not resolve to an address the machine calls its own is what real clusters have, and
# what the launch must cope with). Recorded for `stop`, which removes exactly these lines.
add_hosts() {
    local nodes="$1" i line
    : >"$STATE/hosts.added"
    for ((i = 1; i <= nodes; i++)); do
        line="127.0.0.$((i + 1)) uniapl-n$i $HOSTS_TAG"
        grep -qxF "$line" /etc/hosts || echo "$line" >>/etc/hosts
        echo "$line" >>"$STATE/hosts.added"
    done
}

remove_hosts() {
    [[ -s "$STATE/hosts.added" ]] || return 0
    local kept
    kept="$(grep -vxF -f "$STATE/hosts.added" /etc/hosts || true)"
    # Rewrite in place: /etc/hosts may be a mount point that cannot be replaced by a rename.
    printf '%s\n' "$kept" >/etc/hosts
    rm -f "$STATE/hosts.added"
}

wait_idle() {
    local nodes="$1" i idle
    for ((i = 0; i < 60; i++)); do
        idle="$(sinfo -h -N -o '%N %t' 2>/dev/null | grep -c ' idle$' || true)"
        [[ "$idle" == "$nodes" ]] && return 0
        # Nodes that registered before the controller knew them come up down/unknown.
        scontrol update nodename=ALL state=resume >/dev/null 2>&1 || true
        sleep 0.5
    done
    sinfo -N >&2 || true
    fail "the nodes did not become idle within 30 s; see $STATE/log"
}

start() {
    local nodes="${1:-2}" i start_s=$SECONDS
    [[ "$nodes" == 1 || "$nodes" == 2 ]] || fail "NODES must be 1 or 2, got '$nodes'"
    [[ "$(id -u)" == 0 ]] || cannot "not root (slurmd runs as root and node names go into /etc/hosts)"
    if running; then
        say "already running from $STATE"
        echo "SLURM_CONF=$SLURM_CONF"
        return 0
    fi
    mkdir -p "$STATE"
    install_packages
    rm -rf "${STATE:?}"/{ctld,spool,run,munge,dev} "$STATE/pids"
    mkdir -p "$STATE"/{ctld,spool,run,log,munge,dev}
    # munged refuses a socket folder others can write to; it runs as root here (--force), with
    # its own key, socket and PID file.
    chmod 700 "$STATE/munge"
    mungekey --create --keyfile="$STATE/munge/munge.key" >/dev/null
    munged --force --num-threads=4 --socket="$STATE/munge/munge.socket" --key-file="$STATE/munge/munge.key" \
        --pid-file="$STATE/munge/munged.pid" --log-file="$STATE/log/munged.log" --seed-file="$STATE/munge/seed"
    record_pid "$STATE/munge/munged.pid" munged
    write_config "$nodes"
    add_hosts "$nodes"
    slurmctld -f "$SLURM_CONF" -c -i
    record_pid "$STATE/run/slurmctld.pid" slurmctld
    for ((i = 1; i <= nodes; i++)); do
        slurmd -f "$SLURM_CONF" -N "uniapl-n$i"
        record_pid "$STATE/run/slurmd-uniapl-n$i.pid" slurmd
    done
    wait_idle "$nodes"
    say "$nodes node(s) up in $((SECONDS - start_s)) s (state: $STATE)"
    echo "SLURM_CONF=$SLURM_CONF"
}

stop() {
    local pid program i
    if [[ -f "$STATE/pids" ]] && running; then
        # Jobs first, while the controller still runs: their processes are ours too.
        if scancel --full --quiet --partition=debug >/dev/null 2>&1; then
            # Up to KillWait (30 s) for a job that ignores SIGTERM, plus the epilogue.
            for ((i = 0; i < 180; i++)); do
                [[ -z "$(squeue -h -o %i 2>/dev/null)" ]] && break
                sleep 0.5
            done
        fi
        # Node daemons, then the controller, then munge (the reverse of the start order).
        tac "$STATE/pids" | while read -r pid program; do
            if pid_runs "$pid" "$program"; then kill -TERM "$pid" 2>/dev/null || true; fi
            for ((i = 0; i < 50; i++)); do
                pid_runs "$pid" "$program" || break
                sleep 0.1
            done
            if pid_runs "$pid" "$program"; then
                say "$program ($pid) did not stop on TERM; killing it"
                kill -KILL "$pid" 2>/dev/null || true
            fi
        done
    fi
    rm -f "$STATE/pids"
    remove_hosts
    say "stopped (logs kept in $STATE/log)"
}

case "${1:-}" in
    start) start "${2:-2}" ;;
    stop) stop ;;
    status)
        if running; then echo "running: SLURM_CONF=$SLURM_CONF"; else echo "not running"; exit 1; fi ;;
    *) echo "usage: $0 start [1|2] | stop | status" >&2; exit 1 ;;
esac
