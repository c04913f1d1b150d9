#!/usr/bin/env bash
# Bring up a single-node SLURM cluster on loopback on this machine (Debian, run as root), for
# testing the Snakemake slurm profile (slurm/local/config.yaml) without a real cluster.
#
#   sudo slurm/local/start_cluster.sh        # idempotent: does nothing that is already done
#   sinfo; sbatch --wrap 'hostname'          # then check it answers
#
# What it does (see the SLURM section of the project's facts): installs slurmctld, slurmd,
# slurm-client and munge with apt if missing; writes a munge key (1024 random bytes, owned by
# munge, mode 400) and starts munged as the munge user; writes /etc/slurm/slurm.conf with
# SlurmctldHost=<hostname>(127.0.0.1), no accounting, no cgroups, one node line from `slurmd -C`
# and one partition `debug`; starts slurmctld and slurmd directly (no systemd). No GPU GRES is
# configured, so jobs asking for --gpus are rejected: the local profile's rules must ask for gpu=0.
# To stop it: `scontrol shutdown` (slurmctld and slurmd), then end munged by its pid
# (/run/munge/munged.pid).
set -euo pipefail

[ "$(id -u)" -eq 0 ] || { echo "start_cluster.sh: must run as root" >&2; exit 1; }

need=()
for bin in slurmctld slurmd sbatch munged; do
  command -v "$bin" >/dev/null 2>&1 || need+=("$bin")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "installing slurmctld slurmd slurm-client munge (missing: ${need[*]})"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null
fi

# --- munge -----------------------------------------------------------------------------------
install -d -o munge -g munge -m 0700 /etc/munge /var/lib/munge /var/log/munge
install -d -o munge -g munge -m 0755 /run/munge
if [ ! -s /etc/munge/munge.key ]; then
  dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
fi
chown munge:munge /etc/munge/munge.key
chmod 400 /etc/munge/munge.key
if ! munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
  runuser -u munge -- munged
  for _ in $(seq 20); do munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.25; done
fi
munge -n </dev/null | unmunge >/dev/null || { echo "munged did not start" >&2; exit 1; }

# --- slurm.conf ------------------------------------------------------------------------------
host=$(hostname -s)
install -d -m 0755 /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/slurm
conf=/etc/slurm/slurm.conf
if [ ! -s "$conf" ] || ! grep -q "^# written by dilt slurm/local/start_cluster.sh" "$conf"; then
  node=$(slurmd -C | head -n 1)   # NodeName=<host> CPUs=... RealMemory=...
  cat > "$conf" <<CONF
# written by dilt slurm/local/start_cluster.sh: single node on loopback, no accounting
ClusterName=dilt-local
SlurmctldHost=${host}(127.0.0.1)
SlurmUser=root
SlurmctldPort=6817
SlurmdPort=6818
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
ReturnToService=2
MinJobAge=300
SlurmdTimeout=300
${node} NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=debug Nodes=${host} Default=YES MaxTime=INFINITE State=UP
CONF
fi

# --- daemons ---------------------------------------------------------------------------------
running() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
running /run/slurm/slurmctld.pid || slurmctld
for _ in $(seq 40); do scontrol ping >/dev/null 2>&1 && break; sleep 0.25; done
running /run/slurm/slurmd.pid || slurmd
for _ in $(seq 60); do
  state=$(sinfo -h -N -o '%t' 2>/dev/null | head -n 1)
  case "$state" in idle|mix|alloc) break ;; esac
  sleep 0.5
done
scontrol update NodeName="$host" State=RESUME >/dev/null 2>&1 || true
sinfo
