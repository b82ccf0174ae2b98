#!/usr/bin/env bash
# Stop the single-node SLURM cluster started by scripts/slurm/start.sh.
#
#   scripts/slurm/stop.sh            # stop the daemons, keep the state folder (database, logs)
#   scripts/slurm/stop.sh --purge    # also delete the state folder
#
# Only processes recorded in the state folder's pid files are stopped.
set -euo pipefail

STATE="${GENSYN_SLURM_DIR:-/tmp/gensyn-slurm}"
export SLURM_CONF="$STATE/etc/slurm.conf"
log() { echo "[gensyn-slurm] $*"; }

stop_pid_file() { # stop_pid_file NAME: SIGTERM, wait up to 20 s, then SIGKILL
    local pid_file="$STATE/run/$1.pid" pid
    [[ -f "$pid_file" ]] || return 0
    pid="$(cat "$pid_file")"
    # only a process that still runs this daemon (pids are reused)
    if [[ -n "$pid" && "$(cat "/proc/$pid/comm" 2>/dev/null)" == "$1" ]]; then
        log "stopping $1 (pid $pid)"
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 40); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.5
        done
        if kill -0 "$pid" 2>/dev/null; then
            log "$1 did not stop: SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    rm -f "$pid_file"
}

# Jobs still running belong to this cluster: cancel them before the daemons go.
if [[ -f "$STATE/run/slurmctld.pid" ]] && command -v scancel >/dev/null; then
    scancel --full --quiet --state=RUNNING --user="$(id -un)" 2>/dev/null || true
    scancel --quiet --state=PENDING --user="$(id -un)" 2>/dev/null || true
fi
for daemon in slurmd slurmctld slurmdbd mariadbd munged; do
    stop_pid_file "$daemon"
done
if [[ -L /etc/slurm/slurm.conf && "$(readlink /etc/slurm/slurm.conf)" == "$STATE/etc/slurm.conf" ]]; then
    rm -f /etc/slurm/slurm.conf
fi
if [[ "${1:-}" == "--purge" ]]; then
    log "removing $STATE"
    rm -rf "$STATE"
fi
log "stopped"
