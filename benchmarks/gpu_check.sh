#!/usr/bin/env bash
# The GPU check (benchmarks/gpu_check.py): one run on a CUDA machine, one summary table.
#
#   RECFRAME_DATA_DIR=/path/to/data bash benchmarks/gpu_check.sh --out OUT   # needs CUDA: fails without it
#   bash benchmarks/gpu_check.sh --dry_run --out OUT                          # every stage, tiny, on the CPU
#
# Writes OUT/gpu_check.md (the table), OUT/gpu_check.json and OUT/logs/. Exit status 1 when a
# stage failed or CUDA is absent.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ " $* " != *" --dry_run "* ]] && command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
fi
exec "${PYTHON:-python}" benchmarks/gpu_check.py "$@"
