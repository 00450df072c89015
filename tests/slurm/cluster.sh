#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, for the kit's Slurm tests (`make setup-slurm`, `make test-slurm`).
#
#   bash tests/slurm/cluster.sh setup    # apt-get install slurm-wlm munge (root), write the config below
#   bash tests/slurm/cluster.sh start    # munged (if not running), slurmctld, slurmd; waits until the node is idle
#   bash tests/slurm/cluster.sh stop     # stops the daemons this script started
#   bash tests/slurm/cluster.sh env      # prints `export SLURM_CONF=...` for a shell that submits jobs
#
# Everything but munge's key lives in one git-ignored folder ($SLURM_TEST_DIR, default .slurm-test in the project
# root): slurm.conf, gres.conf, cgroup.conf, state, spool, logs and pid files. Clients find the config through
# SLURM_CONF, so a machine's own /etc/slurm is never touched. The node declares two stand-in GPUs so that a job
# asking for `--gres=gpu:N` is scheduled as on a GPU node (it sees SLURM_JOB_GPUS and CUDA_VISIBLE_DEVICES) without
# real GPUs: Slurm 22.05 drops a GPU declared by count alone, so each is backed by a harmless character device.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
DIR="${SLURM_TEST_DIR:-$ROOT/.slurm-test}"
CONF="$DIR/slurm.conf"
HOST="$(hostname -s)"
CPUS="$(nproc)"
GPUS="${SLURM_TEST_GPUS:-2}"

need_root() {
  if [ "$(id -u)" != 0 ]; then
    echo "cluster.sh: $1 needs root (it installs Debian packages and starts munged/slurmctld/slurmd)." >&2
    echo "  On a machine without root, run the Slurm tests on a cluster you can submit to instead (docs/scaling.md)." >&2
    exit 3
  fi
}

setup() {
  need_root setup
  if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null || ! command -v sbatch >/dev/null; then
    if ! command -v apt-get >/dev/null; then
      echo "cluster.sh: no apt-get here; install Slurm (slurmctld, slurmd, sbatch) and munge by other means." >&2
      exit 3
    fi
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm munge
  fi
  if [ ! -s /etc/munge/munge.key ]; then
    mkdir -p /etc/munge
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
  fi
  chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
  rm -rf "$DIR/state" "$DIR/spool"  # a fresh cluster: no node state or jobs left from an earlier one
  mkdir -p "$DIR/state" "$DIR/spool" "$DIR/log"
  local mem_mb
  mem_mb=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 / 2 ))
  cat > "$CONF" <<CONFEOF
# Written by tests/slurm/cluster.sh: a one-node test cluster (no systemd, no cgroups, no accounting database).
ClusterName=ismtest
SlurmctldHost=$HOST
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
MpiDefault=none
GresTypes=gpu
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SchedulerParameters=batch_sched_delay=0
MinJobAge=600
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$mem_mb Gres=gpu:$GPUS State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
CONFEOF
  local stand_ins=(/dev/null /dev/zero /dev/full /dev/random /dev/urandom)
  [ "$GPUS" -le ${#stand_ins[@]} ] || { echo "cluster.sh: at most ${#stand_ins[@]} stand-in GPUs" >&2; exit 2; }
  : > "$DIR/gres.conf"
  for i in $(seq 0 $((GPUS - 1))); do echo "Name=gpu File=${stand_ins[$i]}" >> "$DIR/gres.conf"; done
  printf 'CgroupPlugin=cgroup/v1\nIgnoreSystemd=yes\n' > "$DIR/cgroup.conf"
  echo "wrote $CONF (node $HOST: $CPUS CPUs, $GPUS stand-in GPUs; partition debug)"
}

start() {
  need_root start
  [ -f "$CONF" ] || { echo "cluster.sh: no $CONF: run 'make setup-slurm' first." >&2; exit 3; }
  export SLURM_CONF="$CONF"
  if ! pgrep -x munged >/dev/null; then
    mkdir -p /run/munge && chown munge:munge /run/munge
    runuser -u munge -- munged --force
  fi
  pgrep -f "slurmctld -f $CONF" >/dev/null || slurmctld -f "$CONF"
  pgrep -f "slurmd -f $CONF" >/dev/null || slurmd -f "$CONF"
  for _ in $(seq 1 60); do
    if state=$(sinfo -h -N -o %t 2>/dev/null | head -n 1) && [[ "$state" == idle* || "$state" == mix* || "$state" == alloc* ]]; then
      echo "slurm up: node $HOST $state (SLURM_CONF=$CONF)"
      return 0
    fi
    sleep 1
  done
  echo "cluster.sh: the node did not become idle in 60 s; logs in $DIR/log" >&2
  tail -n 20 "$DIR/log/slurmctld.log" "$DIR/log/slurmd.log" >&2 || true
  exit 1
}

stop() {
  for name in slurmd slurmctld; do
    if [ -f "$DIR/$name.pid" ]; then kill "$(cat "$DIR/$name.pid")" 2>/dev/null || true; fi
    pkill -f "$name -f $CONF" 2>/dev/null || true
  done
  echo "slurm stopped"
}

case "${1:-}" in
  setup) setup ;;
  start) start ;;
  stop) stop ;;
  env) echo "export SLURM_CONF=$CONF" ;;
  *) echo "usage: $0 setup|start|stop|env" >&2; exit 2 ;;
esac
