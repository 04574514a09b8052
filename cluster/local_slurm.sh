#!/usr/bin/env bash
# A single-node SLURM cluster on this machine, from Debian's packages, with job accounting.
#   sudo cluster/local_slurm.sh start    install (once), write the configs, start every daemon
#   cluster/local_slurm.sh status        daemons, node state, the jobs sacct knows
#   sudo cluster/local_slurm.sh stop     stop every daemon this script started
# Idempotent: `start` on a running cluster only checks it; `stop` on a stopped one does nothing.
# Daemons: munged (authentication), mariadb + slurmdbd (accounting, so `sacct` lists jobs),
# slurmctld (controller) and slurmd (the one compute node), all on localhost, SlurmUser=root.
# Slurm 22.05 has no file-based accounting storage: `sacct` needs slurmdbd, and slurmdbd a MySQL.
set -euo pipefail

CLUSTER=opdpipe
CONF=/etc/slurm
STATE=/var/lib/slurm-opdpipe
LOGS=/var/log/slurm-opdpipe
PACKAGES=(slurm-wlm slurmdbd munge mariadb-server)
HOST=$(hostname -s)

need_root() { [ "$(id -u)" = 0 ] || { echo "local_slurm.sh $1: run as root" >&2; exit 1; }; }
running() { pgrep -x "$1" > /dev/null; }

install_packages() {
  local missing=()
  for p in "${PACKAGES[@]}"; do dpkg -s "$p" > /dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} = 0 ] && return
  echo "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" > /dev/null
}

write_configs() {
  local cpus mem_mb
  cpus=$(nproc)
  mem_mb=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 * 8 / 10 ))  # 80% for jobs
  mkdir -p "$CONF" "$STATE/ctld" "$STATE/d" "$LOGS"
  cat > "$CONF/slurm.conf" <<EOF
# Written by cluster/local_slurm.sh: one node that is its own controller.
ClusterName=$CLUSTER
SlurmctldHost=$HOST
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
# no cgroups in a container: track processes by parent id, no task binding
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
MpiDefault=none
ReturnToService=2
# cores and memory are consumable: jobs run side by side as long as their requests fit
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
# accounting through slurmdbd, so that sacct lists every job
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
# sacct shows each job's comment: the executor writes the rule and wildcards there
AccountingStoreFlags=job_comment
JobCompType=jobcomp/none
# keep finished jobs visible to squeue for a while (the executor may poll either tool)
MinJobAge=600
NodeName=$HOST CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=main Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
  cat > "$CONF/slurmdbd.conf" <<EOF
# Written by cluster/local_slurm.sh
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
PidFile=$STATE/slurmdbd.pid
LogFile=$LOGS/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
EOF
  chmod 600 "$CONF/slurmdbd.conf"
}

start_database() {
  if ! running mariadbd; then
    mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
    service mariadb start > /dev/null
  fi
  mysql -u root <<'SQL'
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurm';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
SQL
}

wait_for() {  # wait_for <seconds> <description> <command...>
  local n=$1 what=$2
  shift 2
  for _ in $(seq 1 "$n"); do "$@" > /dev/null 2>&1 && return 0; sleep 1; done
  echo "local_slurm.sh: $what did not come up within ${n}s; logs in $LOGS" >&2
  return 1
}

start() {
  need_root start
  install_packages
  write_configs
  running munged || { mkdir -p /run/munge && chown munge:munge /run/munge && runuser -u munge -- /usr/sbin/munged; }
  start_database
  running slurmdbd || slurmdbd
  wait_for 30 slurmdbd sacctmgr -n list cluster
  sacctmgr -i -n list cluster format=cluster | grep -qw "$CLUSTER" || sacctmgr -i add cluster "$CLUSTER" > /dev/null
  if running slurmctld; then scontrol reconfigure; else slurmctld; fi  # a running one rereads the config
  wait_for 30 slurmctld scontrol ping
  running slurmd || slurmd
  wait_for 60 "node $HOST" bash -c "sinfo -h -N -o %T | grep -qE '^(idle|mixed|allocated)'"
  status
}

stop() {
  need_root stop
  local pid
  for d in slurmd slurmctld slurmdbd; do
    pid=$(cat "$STATE/$d.pid" 2> /dev/null || true)
    if [ -n "$pid" ] && kill -0 "$pid" 2> /dev/null; then
      kill "$pid"
      for _ in $(seq 1 20); do kill -0 "$pid" 2> /dev/null || break; sleep 0.5; done
    fi
  done
  running mariadbd && service mariadb stop > /dev/null || true
  pid=$(cat /run/munge/munged.pid 2> /dev/null || true)
  [ -n "$pid" ] && kill "$pid" 2> /dev/null || true
  echo "local SLURM cluster stopped"
}

status() {
  for d in munged mariadbd slurmdbd slurmctld slurmd; do
    printf '%-10s %s\n' "$d" "$(running "$d" && echo running || echo stopped)"
  done
  running slurmctld || return 0
  sinfo -N -o "%N %T %c CPUs %m MB"
  running slurmdbd && sacct -a -X -n -S now-1days -o JobID,Comment%60,State,AllocCPUS,Elapsed | tail -n 20 || true
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
