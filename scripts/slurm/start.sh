#!/usr/bin/env bash
# Start a single-node SLURM cluster on 127.0.0.1 for tests and for trying GENSYN out.
#
#   sudo scripts/slurm/start.sh          # install missing Debian packages, start, wait until ready
#   source /tmp/gensyn-slurm/env.sh      # SLURM_CONF for sinfo/sbatch/sacct in this shell
#   scripts/slurm/stop.sh                # stop every daemon this script started
#
# Daemons: munged -> mariadbd -> slurmdbd -> (sacctmgr add cluster) -> slurmctld -> slurmd.
# Everything (configs, spool, logs, database, pid files) lives in one state folder,
# $GENSYN_SLURM_DIR (default /tmp/gensyn-slurm); no systemd, no cgroups, no /etc edits
# except a symlink /etc/slurm/slurm.conf -> state folder when no slurm.conf exists there.
# Run as root (the daemons run as root; jobs run as the submitting user). Idempotent:
# running it again on a running cluster only checks that it answers.
#
# Settings (environment): GENSYN_SLURM_DIR, GENSYN_SLURM_CPUS (default: nproc),
# GENSYN_SLURM_MEM_MB (default: total memory - 1 GiB), GENSYN_SLURM_GRACE_S (pre-emption
# grace time, default 30), GENSYN_SLURM_KILL_WAIT_S (SIGTERM -> SIGKILL, default 10),
# GENSYN_SLURM_CRED_EXPIRE_S (credential lifetime = delay before a requeued job restarts,
# default 10; SLURM's default is 120),
# GENSYN_SLURM_PORT_BASE (slurmctld port; slurmd, slurmdbd, mariadb use the next three;
# default 6817), GENSYN_SLURM_TIMEOUT_S (how long to wait for readiness, default 120).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
STATE="${GENSYN_SLURM_DIR:-/tmp/gensyn-slurm}"
CLUSTER=gensyn
ACCOUNT=gensyn
CPUS="${GENSYN_SLURM_CPUS:-$(nproc)}"
MEM_MB="${GENSYN_SLURM_MEM_MB:-$(($(awk '/^MemTotal:/{print int($2/1024)}' /proc/meminfo) - 1024))}"
GRACE_S="${GENSYN_SLURM_GRACE_S:-30}"
KILL_WAIT_S="${GENSYN_SLURM_KILL_WAIT_S:-10}"
CRED_EXPIRE_S="${GENSYN_SLURM_CRED_EXPIRE_S:-10}"  # also how long a requeued job waits (SLURM default 120)
PORT_BASE="${GENSYN_SLURM_PORT_BASE:-6817}"
CTLD_PORT=$PORT_BASE
SLURMD_PORT=$((PORT_BASE + 1))
DBD_PORT=$((PORT_BASE + 2))
DB_PORT=$((PORT_BASE + 3))
TIMEOUT_S="${GENSYN_SLURM_TIMEOUT_S:-120}"
HOST="$(hostname -s)"
NODE="$HOST"
PACKAGES=(munge mariadb-server slurmdbd slurmctld slurmd slurm-client)

log() { echo "[gensyn-slurm] $*"; }
die() { echo "[gensyn-slurm] ERROR: $*" >&2; exit 1; }

[[ $(id -u) -eq 0 ]] || die "run as root (the SLURM daemons run as root here): sudo $0"

# --- packages ---------------------------------------------------------------------------
missing=()
for pkg in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    log "installing Debian packages: ${missing[*]}"
    command -v apt-get >/dev/null || die "apt-get not found: install ${missing[*]} with your package manager"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

export SLURM_CONF="$STATE/etc/slurm.conf"
export PATH="/usr/sbin:/sbin:$PATH"

# alive PIDFILE: the pid in the file runs the daemon named by the file (not a reused pid)
alive() {
    local pid
    [[ -f "$1" ]] && pid="$(cat "$1")" && [[ -n "$pid" ]] || return 1
    [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == "$(basename "$1" .pid)" ]]
}

wait_for() { # wait_for SECONDS DESCRIPTION COMMAND...
    local limit=$1 what=$2
    shift 2
    local start=$SECONDS
    until "$@" >/dev/null 2>&1; do
        ((SECONDS - start < limit)) || die "$what did not come up within ${limit}s; see $STATE/log/"
        sleep 0.5
    done
}

node_idle() { sinfo -h -N -n "$NODE" -o %T 2>/dev/null | grep -Eq '^(idle|mixed|allocated)'; }

if alive "$STATE/run/slurmctld.pid" && alive "$STATE/run/slurmd.pid" && alive "$STATE/run/slurmdbd.pid" \
    && node_idle && sacct -n -X -S now >/dev/null 2>&1; then
    log "already running (state: $STATE)"
    exit 0
fi

mkdir -p "$STATE"/{etc,log,run,munge,spool/ctld,spool/slurmd,mysql}
chmod 700 "$STATE/munge" "$STATE/etc"

# --- configuration ------------------------------------------------------------------------
[[ -s "$STATE/etc/db.pass" ]] || (umask 077 && head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$STATE/etc/db.pass")
DB_PASS="$(cat "$STATE/etc/db.pass")"
render() { # render TEMPLATE OUTPUT
    sed -e "s|@CLUSTER@|$CLUSTER|g" -e "s|@HOST@|$HOST|g" -e "s|@NODE@|$NODE|g" \
        -e "s|@STATE@|$STATE|g" -e "s|@CPUS@|$CPUS|g" -e "s|@MEM_MB@|$MEM_MB|g" \
        -e "s|@CTLD_PORT@|$CTLD_PORT|g" -e "s|@SLURMD_PORT@|$SLURMD_PORT|g" \
        -e "s|@DBD_PORT@|$DBD_PORT|g" -e "s|@DB_PORT@|$DB_PORT|g" -e "s|@DB_PASS@|$DB_PASS|g" \
        -e "s|@GRACE_S@|$GRACE_S|g" -e "s|@KILL_WAIT_S@|$KILL_WAIT_S|g" \
        -e "s|@CRED_EXPIRE_S@|$CRED_EXPIRE_S|g" "$1" >"$2"
}
render "$HERE/slurm.conf.in" "$STATE/etc/slurm.conf"
(umask 077 && render "$HERE/slurmdbd.conf.in" "$STATE/etc/slurmdbd.conf")
chmod 644 "$STATE/etc/slurm.conf"
chmod 600 "$STATE/etc/slurmdbd.conf"
chmod 755 "$STATE/etc"
cat >"$STATE/env.sh" <<EOF
# source this file to talk to the GENSYN test cluster
export SLURM_CONF="$STATE/etc/slurm.conf"
EOF
# Plain `sinfo` without SLURM_CONF: link the default path, but never replace a real config.
if [[ -d /etc/slurm && ! -e /etc/slurm/slurm.conf ]]; then
    ln -s "$STATE/etc/slurm.conf" /etc/slurm/slurm.conf
fi

# --- munged -------------------------------------------------------------------------------
if [[ ! -s "$STATE/munge/munge.key" ]]; then
    (umask 077 && head -c 1024 /dev/urandom >"$STATE/munge/munge.key")
fi
if ! alive "$STATE/run/munged.pid"; then
    log "starting munged"
    munged --force --key-file="$STATE/munge/munge.key" --socket="$STATE/munge/munge.socket" \
        --pid-file="$STATE/run/munged.pid" --log-file="$STATE/log/munged.log" \
        --seed-file="$STATE/munge/munged.seed"
fi
wait_for 20 munged munge -n -S "$STATE/munge/munge.socket"

# --- MariaDB --------------------------------------------------------------------------------
DB=(mariadb --no-defaults --protocol=socket --socket="$STATE/run/mysqld.sock" -u root)
if [[ ! -d "$STATE/mysql/mysql" ]]; then
    log "initialising MariaDB in $STATE/mysql"
    mariadb-install-db --no-defaults --datadir="$STATE/mysql" --user=root \
        --auth-root-authentication-method=socket --skip-test-db >"$STATE/log/mariadb-install.log" 2>&1 \
        || die "mariadb-install-db failed; see $STATE/log/mariadb-install.log"
fi
if ! alive "$STATE/run/mariadbd.pid"; then
    log "starting mariadbd on 127.0.0.1:$DB_PORT"
    nohup mariadbd --no-defaults --datadir="$STATE/mysql" --user=root --bind-address=127.0.0.1 \
        --port="$DB_PORT" --socket="$STATE/run/mysqld.sock" --pid-file="$STATE/run/mariadbd.pid" \
        --log-error="$STATE/log/mariadb.log" --skip-log-bin --innodb-buffer-pool-size=128M \
        --innodb-lock-wait-timeout=900 --max-connections=100 >/dev/null 2>&1 &
fi
wait_for 60 mariadbd "${DB[@]}" -e "SELECT 1"
"${DB[@]}" -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
  CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
  ALTER USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
  GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';"

# --- slurmdbd, cluster and account ---------------------------------------------------------
if ! alive "$STATE/run/slurmdbd.pid"; then
    log "starting slurmdbd on 127.0.0.1:$DBD_PORT"
    slurmdbd
fi
wait_for 60 slurmdbd sacctmgr -n list cluster
if ! sacctmgr -n -P list cluster format=cluster | grep -qx "$CLUSTER"; then
    sacctmgr -i add cluster "$CLUSTER" >/dev/null
fi
if ! sacctmgr -n -P list account format=account | grep -qx "$ACCOUNT"; then
    sacctmgr -i add account "$ACCOUNT" cluster="$CLUSTER" description="GENSYN test account" >/dev/null
fi
if ! sacctmgr -n -P list assoc user=root account="$ACCOUNT" format=user | grep -qx root; then
    sacctmgr -i add user root account="$ACCOUNT" cluster="$CLUSTER" >/dev/null
fi

# --- slurmctld, slurmd ----------------------------------------------------------------------
if ! alive "$STATE/run/slurmctld.pid"; then
    log "starting slurmctld on 127.0.0.1:$CTLD_PORT ($CPUS CPUs, ${MEM_MB} MB)"
    slurmctld
fi
wait_for 60 slurmctld scontrol ping
if ! alive "$STATE/run/slurmd.pid"; then
    log "starting slurmd (node $NODE)"
    slurmd -N "$NODE"
fi
wait_for "$TIMEOUT_S" "node $NODE (idle)" node_idle
wait_for 60 sacct sacct -n -X -S now
log "ready: $(sinfo -h -N -o '%N %T %c CPUs %m MB' | head -1); run: source $STATE/env.sh"
