#!/usr/bin/env bash
# Runs one phi-jax-run command on every host of a Cloud TPU VM slice (docs/multihost.md).
#
#   launch/tpu_vm.sh TPU_NAME ZONE [phi-jax-run flags...]
#   launch/tpu_vm.sh phi1-v5e-32 us-west4-a --config=phi1 --workdir=/mnt/shared/phi1 \
#       --config.mesh.fsdp=-1 --config.train.microbatches=64
#
# Every host runs the same command (gcloud compute tpus tpu-vm ssh --worker=all); JAX
# finds the other hosts from the TPU VM's metadata (phi-jax-run calls
# jax.distributed.initialize() when TPU_WORKER_HOSTNAMES lists several); worker 0 runs
# the job's coordination service in a process beside process 0. The work directory
# must be one filesystem every host sees (a Filestore / NFS mount, or gcsfuse): checkpoints are written by all hosts together, markers and
# metrics by process 0.
#
# Stopping and resuming: a preemption notice (SIGTERM to every process of a preempted
# or maintained host), Ctrl-C here (the ssh sessions close: SIGHUP) or a process that
# dies (process 0 and worker 0's whole host included) stops every process of the job,
# each naming the process and the node it lost (docs/multihost.md); a stop first lets
# a checkpoint save in flight finish on every host (at most --heartbeat_timeout_s), so
# it is committed; nothing half-done is marked complete. Run this same command again
# (on the recreated slice) to resume from the last complete checkpoint.
#
# Environment:
#   PROJECT          gcloud project (default: gcloud's)
#   PHI_JAX_INSTALL  first pip install this on every host, e.g.
#                    "phi-jax[tpu,data] @ git+https://github.com/<you>/phi_jax" or a
#                    path on the shared filesystem; empty: phi-jax-run is installed
#   REMOTE_DIR       directory the command runs in on each host (default: ~)
#   DRY_RUN=1        print the gcloud command instead of running it
set -euo pipefail

if [[ $# -lt 2 ]]; then
  sed -n '2,28p' "$0" >&2
  exit 2
fi
TPU_NAME=$1 ZONE=$2
shift 2

remote="set -euo pipefail; cd ${REMOTE_DIR:-~}"
if [[ -n "${PHI_JAX_INSTALL:-}" ]]; then
  remote+="; python3 -m pip install -q $(printf '%q' "$PHI_JAX_INSTALL")"
fi
remote+="; export PATH=\$HOME/.local/bin:\$PATH; phi-jax-run"
for arg in "$@"; do
  remote+=" $(printf '%q' "$arg")"
done

cmd=(gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" --worker=all
     --command="$remote")
if [[ -n "${PROJECT:-}" ]]; then
  cmd+=(--project="$PROJECT")
fi
if [[ "${DRY_RUN:-0}" == 1 ]]; then
  printf '%q ' "${cmd[@]}"
  echo
else
  exec "${cmd[@]}"
fi
