#!/usr/bin/env bash
# The GPU measurements of jaxlr in prepared commands that fit a short GPU slot
# (benchmarks/gpu_checks.py says what each measures, and how its time is estimated):
#
#   bash benchmarks/gpu_checks.sh OUT [--data-dir DIR]            # main: about 6 min on an H100/H200
#   bash benchmarks/gpu_checks.sh OUT --second [--data-dir DIR]   # optional: about 5 min
#   bash benchmarks/gpu_checks.sh OUT --gpt                       # optional: the GPT sweep vs torch, ~2 min
#   bash benchmarks/gpu_checks.sh OUT --smoke [--gpt]             # every step on the CPU, tiny shapes
#   bash benchmarks/gpu_checks.sh OUT --plan [--second]           # the plan and its estimate
#
# Run from anywhere; it runs from the repository root. OUT gets one Markdown table per stage
# (target beside each figure, ✓/✗), the raw JSON and a log, stage by stage as each finishes.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
export PYTHONPATH="$(pwd)${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if [ -z "${PYTHON:-}" ]; then
  PYTHON=python3
  command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python
fi
exec "$PYTHON" benchmarks/gpu_checks.py "$@"
