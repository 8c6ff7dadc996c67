import os
from pathlib import Path

import pytest
import torch

# Tests run on CPU with tiny networks; one thread keeps them deterministic and quick.  On a GPU machine, too,
# `--device auto` means the CPU here (and in the processes tests start); tests/test_cuda.py asks for the GPU.
torch.set_num_threads(int(os.environ.get("FACESYNTH_TEST_THREADS", "1")))
os.environ.setdefault("FACESYNTH_DEVICE", "cpu")

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
UTKFACE = SHARED / "data" / "faces" / "utkface-200.zip"


@pytest.fixture(scope="session")
def utkface_zip() -> Path:
    if not UTKFACE.is_file():
        pytest.skip(f"{UTKFACE} is absent (../shared holds the development data; a fresh clone has none)")
    return UTKFACE


@pytest.fixture(scope="session")
def face_dataset(tmp_path_factory) -> Path:
    """A 16x16 training zip: UTKFace when ../shared is here, else synthetic blobs."""
    from facesynth.data.build import build_dataset

    dest = tmp_path_factory.mktemp("data") / "faces16.zip"
    if UTKFACE.is_file():
        build_dataset(UTKFACE, dest, 16, max_images=64, quiet=True)
    else:
        import numpy as np

        rng = np.random.default_rng(0)
        yy, xx = np.mgrid[:16, :16]
        imgs = []
        for _ in range(64):
            cy, cx = rng.uniform(5, 11, 2)
            blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 12.0)
            imgs.append((np.stack([blob * rng.uniform(0.4, 1)] * 3, -1) * 255).astype(np.uint8))
        arr = dest.parent / "blobs.npy"
        np.save(arr, np.stack(imgs))
        build_dataset(arr, dest, 16, quiet=True)
    return dest


@pytest.fixture(scope="session")
def tiny_run(face_dataset, tmp_path_factory):
    """A finished 'tiny' run with two snapshots; tests read it, never write into it."""
    from facesynth.training.loop import TrainOptions, train

    out = tmp_path_factory.mktemp("run") / "r"
    train(TrainOptions(data=str(face_dataset), out=str(out), preset="tiny", kimg=0.032, quiet=True,
                       tensorboard=False, grid_size=4, overrides={"snapshot_kimg": 0.016}))
    return out
