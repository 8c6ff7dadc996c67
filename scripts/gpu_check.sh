#!/usr/bin/env bash
# On a CUDA machine that has facesynth's dependencies: the GPU tests (tests/test_cuda.py: no host-device
# synchronisation in a training step, the automatic speed settings, eager and compiled), then the training cost of
# the paper presets (benchmarks/train_cost.py, eager and compiled). Figures and the test log go to $OUT
# (default benchmarks/results). Packages missing there (e.g. pytest) can come as a folder .device-deps/,
# made with `pip install --target .device-deps pytest`.
#
#     bash scripts/gpu_check.sh            # then: python benchmarks/peers/results_md.py
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-benchmarks/results}
python=${PYTHON:-python3}
mkdir -p "$out"
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}"
[ -d .device-deps ] && export PYTHONPATH="$PYTHONPATH:.device-deps"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || exit 1
"$python" -m pytest -q -p no:cacheprovider -m gpu tests/test_cuda.py 2>&1 | tee "$out/gpu_tests.log"
tests=${PIPESTATUS[0]}
"$python" benchmarks/optimizer_step.py --presets stylegan2-64-paper,stylegan2-256-paper --out "$out"
"$python" benchmarks/train_cost.py --compile --out "$out"
cost=$?
echo "gpu tests: exit $tests; train_cost: exit $cost"
exit $(( tests != 0 || cost != 0 ))
