#!/usr/bin/env bash
# Train on a Slurm cluster: one task per GPU, mmengine's slurm launcher reads the rank from Slurm's variables.
#   tools/slurm_train.sh PARTITION JOB_NAME CONFIG [tools/train.py arguments...]
#   GPUS=16 GPUS_PER_NODE=8 tools/slurm_train.sh gpu swin_t configs/upernet_swin_t_ade.py --work-dir work_dirs/swin_t
# SRUN_ARGS adds srun options (e.g. "--qos=high"); PORT sets the rendezvous port (default 29500).
set -euo pipefail
if [ $# -lt 3 ]; then
    echo "usage: $0 PARTITION JOB_NAME CONFIG [tools/train.py arguments...]" >&2
    exit 2
fi
PARTITION=$1
JOB_NAME=$2
CONFIG=$3
shift 3
GPUS=${GPUS:-8}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
CPUS_PER_TASK=${CPUS_PER_TASK:-5}
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck disable=SC2086  # SRUN_ARGS is a list of options
PYTHONPATH="$HERE/..${PYTHONPATH:+:$PYTHONPATH}" MASTER_PORT="${PORT:-29500}" \
srun -p "$PARTITION" --job-name="$JOB_NAME" --gres=gpu:"$GPUS_PER_NODE" --ntasks="$GPUS" \
    --ntasks-per-node="$GPUS_PER_NODE" --cpus-per-task="$CPUS_PER_TASK" --kill-on-bad-exit=1 ${SRUN_ARGS:-} \
    "${PYTHON:-python}" -u "$HERE/train.py" "$CONFIG" --launcher slurm "$@"
