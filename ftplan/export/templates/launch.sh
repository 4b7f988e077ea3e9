#!/usr/bin/env bash
# Launch the run ftplan planned: {{description}}.
#
#   bash launch.sh [--max-steps N] [--resume] [--smoke] [--config PATH]    (flags go to train.py)
#
# One process runs plain python; several run under torchrun. Multi-node: run this script once on
# every node with NNODES, NODE_RANK, MASTER_ADDR (the first node's address) and MASTER_PORT set.
# Under Slurm (srun with one task per node) they default to SLURM_NNODES, SLURM_NODEID and the
# job's first host. NPROC_PER_NODE overrides the processes per node, PYTHON the interpreter.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

PYTHON="${PYTHON:-python}"
NPROC_PER_NODE="${NPROC_PER_NODE:-{{gpus_per_node}}}"
NNODES="${NNODES:-${SLURM_NNODES:-{{nodes}}}}"
NODE_RANK="${NODE_RANK:-${SLURM_NODEID:-0}}"
MASTER_PORT="${MASTER_PORT:-{{master_port}}}"
if [[ -z "${MASTER_ADDR:-}" && -n "${SLURM_JOB_NODELIST:-}" ]] && command -v scontrol >/dev/null 2>&1; then
  MASTER_ADDR="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | sed -n 1p)"  # sed reads all: no SIGPIPE under pipefail
fi
USES_DEEPSPEED={{uses_deepspeed}}  # 1 for DeepSpeed and FSDP2: they need torchrun's environment
export PYTHONUNBUFFERED=1
{{environment}}
if [[ "$NPROC_PER_NODE" -eq 1 && "$NNODES" -eq 1 && "$USES_DEEPSPEED" -eq 0 ]]; then
  exec "$PYTHON" train.py "$@"
fi
if [[ "$NNODES" -eq 1 && -z "${MASTER_ADDR:-}" ]]; then
  exec "$PYTHON" -m torch.distributed.run --standalone --nproc_per_node "$NPROC_PER_NODE" train.py "$@"
fi
exec "$PYTHON" -m torch.distributed.run --nnodes "$NNODES" --node_rank "$NODE_RANK" \
  --nproc_per_node "$NPROC_PER_NODE" \
  --master_addr "${MASTER_ADDR:?set MASTER_ADDR to the first node address}" --master_port "$MASTER_PORT" \
  train.py "$@"
