#!/bin/bash
# The GPU check: every debug recipe, the demo with device and worker views, SimCLR ResNet-50 and I-JEPA
# ViT-B/16 at 224 px, through the real engine; samples/s, peak memory, MFU, data-bound verdict.
#   tools/gpu_check.sh [--out DIR]             on a CUDA machine, < 8 min
#   tools/gpu_check.sh --device cpu --tiny     the same path at tiny sizes on CPU (tests/tools runs it)
# Needs the demo data: `python -m ssl_platform data prepare fashion-mnist` (make demo / make test do it).
set -euo pipefail
cd "$(dirname "$0")/.."
# the project's venv (make venv) unless $PYTHON names another interpreter
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
exec "$PYTHON" tools/gpu_check.py "$@"
