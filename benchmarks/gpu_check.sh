#!/usr/bin/env bash
# Planner vs measured peak memory on an NVIDIA GPU: randomly initialised Llama-3.2-1B,
# Qwen2.5-1.5B and Llama-3.2-3B (shapes from config.json, no downloads), full / LoRA / QLoRA,
# with and without gradient checkpointing, bf16, s2048, b1.
#   benchmarks/gpu_check.sh             # on a GPU machine
#   benchmarks/gpu_check.sh --dry-run   # tiny configs of the same families on the CPU
# Extra options go to `python -m ftplan.probe.gpu_check` (--models, --methods, --seq, --batch,
# --checkpointing on|off|both, --loss chunked|full_logits|both, --sharding none|fsdp2|both,
# --tolerance). FSDP2 cases run on two GPUs (skipped, with a line saying so, on fewer; two gloo
# processes in a dry run). Exit 1 when a case is outside the tolerance.
#   benchmarks/gpu_check.sh --speed     # planned vs measured tokens/s, eager and torch.compile
#                                       # (--compile off|on|both, --speed-tolerance, default 0.25)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PYTHONPATH="${here}${PYTHONPATH:+:${PYTHONPATH}}"
exec "${PYTHON:-python}" -m ftplan.probe.gpu_check "$@"
