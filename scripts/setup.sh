#!/usr/bin/env bash
# Creates .venv with facesynth and its test tools.  Safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
# Pinned so pip takes the builds already on this machine's disk instead of downloading a new one;
# elsewhere any torch>=2.4 works (pip install -e . picks one).
TORCH_PIN=${FACESYNTH_TORCH_PIN:-"torch==2.14.1 torchvision==0.29.1"}
# shellcheck disable=SC2086
.venv/bin/python -m pip install -q $TORCH_PIN 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -m pip install -q -e ".[dev]" 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -c "import facesynth, torch; print('facesynth', facesynth.__version__, 'torch', torch.__version__)"
