#!/usr/bin/env bash
# Train on NUM_PROCS processes of this machine with torchrun and mmengine's pytorch launcher (DDP).
#   tools/dist_train.sh CONFIG NUM_PROCS [tools/train.py arguments...]
#   tools/dist_train.sh configs/upernet_swin_t_ade.py 8 --work-dir work_dirs/swin_t --resume
# Several machines: NNODES, NODE_RANK, MASTER_ADDR and PORT as torchrun's --nnodes/--node_rank/--master_addr/
# --master_port (PORT defaults to 29500). Without CUDA the processes talk over gloo (densekit.apis.build_runner).
set -euo pipefail
if [ $# -lt 2 ]; then
    echo "usage: $0 CONFIG NUM_PROCS [tools/train.py arguments...]" >&2
    exit 2
fi
CONFIG=$1
NUM_PROCS=$2
shift 2
HERE=$(cd "$(dirname "$0")" && pwd)
PYTHONPATH="$HERE/..${PYTHONPATH:+:$PYTHONPATH}" \
exec "${PYTHON:-python}" -m torch.distributed.run \
    --nnodes="${NNODES:-1}" --node_rank="${NODE_RANK:-0}" --master_addr="${MASTER_ADDR:-127.0.0.1}" \
    --master_port="${PORT:-29500}" --nproc_per_node="$NUM_PROCS" \
    "$HERE/train.py" "$CONFIG" --launcher pytorch "$@"
