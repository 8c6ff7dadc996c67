#!/usr/bin/env bash
# Creates one virtual environment per peer trainer beside this script; facesynth's .venv is never touched.
# Safe to re-run: a venv whose peer already imports is left as it is.
#   .venv-stylegan2-pytorch  lucidrains' stylegan2-pytorch 1.9.0 with all its declared dependencies
#   .venv-pro-gan-pth        akanimax's pro-gan-pth 3.4 with --no-deps (see below)
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
# The torch of facesynth's setup (pip takes it from this machine's disk); elsewhere any recent torch works.
TORCH_PIN=${FACESYNTH_TORCH_PIN:-"torch==2.14.1 torchvision==0.29.1"}

pip_in() {  # pip_in VENV ARGS...: quiet pip, without the noise about local index folders
    local venv=$1
    shift
    "$venv/bin/python" -m pip install -q "$@" 2>&1 | grep -v "^WARNING: Location" || true
}

ready() {  # ready VENV PYTHON_CODE: the venv exists and the code runs in it
    [ -x "$1/bin/python" ] && "$1/bin/python" -c "$2" >/dev/null 2>&1
}

# stylegan2_pytorch asserts a CUDA GPU at import; peer_runtime.import_stylegan2 lets it run on the CPU.
SG2=.venv-stylegan2-pytorch
if ready $SG2 "import peer_runtime; peer_runtime.import_stylegan2()"; then
    echo "$SG2: ready"
else
    [ -x $SG2/bin/python ] || "$PY" -m venv $SG2
    # shellcheck disable=SC2086
    pip_in $SG2 $TORCH_PIN
    # torch is pinned again so that no dependency of the peer moves it.
    # shellcheck disable=SC2086
    pip_in $SG2 stylegan2-pytorch==1.9.0 $TORCH_PIN
fi

# pro-gan-pth 3.4 pins torch==1.10.0, numpy==1.21.4, scipy, opencv-python, clean-fid, ... (none of those pins
# installs on Python 3.11).  Its library, pro_gan_pytorch, imports only torch, torchvision, numpy, Pillow and
# tensorboard (SummaryWriter); the other pins serve its FID and interpolation scripts, which are not used here.
PG=.venv-pro-gan-pth
if ready $PG "import pro_gan_pytorch.gan"; then
    echo "$PG: ready"
else
    [ -x $PG/bin/python ] || "$PY" -m venv $PG
    # shellcheck disable=SC2086
    pip_in $PG $TORCH_PIN numpy pillow tensorboard
    pip_in $PG --no-deps pro-gan-pth==3.4
fi

$SG2/bin/python -c "import importlib.metadata as m, peer_runtime as p, torch; p.import_stylegan2(); \
print('$SG2: stylegan2-pytorch', m.version('stylegan2-pytorch'), 'torch', torch.__version__)"
$PG/bin/python -c "import importlib.metadata as m, pro_gan_pytorch.gan, torch; \
print('$PG: pro-gan-pth', m.version('pro-gan-pth'), 'torch', torch.__version__)"
