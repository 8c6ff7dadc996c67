"""`facesynth demo`: the first thing a new user runs — build a small face data set, train, show a grid.

Uses ../shared's UTKFace zip when present, else the 100 LFW faces bundled with
scikit-image, so it works on a fresh machine with no downloads.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from .checkpoints import load_generator
from .data.build import build_dataset
from .errors import FacesynthError
from .synthesis.generate import generate_images, parse_seeds, save_images
from .training.loop import TrainOptions, train

SHARED_FACES = Path("data/faces/utkface-200.zip")


def find_demo_faces() -> Path | None:
    """UTKFace from a `shared/` folder beside the project or the working directory, if there is one."""
    here = Path(__file__).resolve()
    for base in [Path.cwd(), *Path.cwd().parents, *here.parents]:
        cand = base / "shared" / SHARED_FACES
        if cand.is_file():
            return cand
    return None


def lfw_faces_array(dest: Path) -> Path:
    """The scikit-image LFW subset's 100 face crops (its other 100 images are not faces), as .npy."""
    try:
        from skimage.data import lfw_subset
    except ImportError:
        raise FacesynthError("no face images found: install scikit-image (pip install 'facesynth[demo]') "
                             "or pass --data with a folder or zip of face photos") from None
    faces = (lfw_subset()[:100] * 255).round().astype(np.uint8)
    dest.parent.mkdir(parents=True, exist_ok=True)
    np.save(dest, faces)
    return dest


def run_demo(out: str | Path = "runs/demo", data: str | Path | None = None, minutes: float = 1.0,
             preset: str = "tiny", max_images: int = 5000, seed: int = 0) -> Path:
    out = Path(out)
    if data is None:
        data = find_demo_faces() or lfw_faces_array(out / "lfw-faces.npy")
    print(f"faces from {data}", file=sys.stderr)
    from .presets import get_preset

    cfg = get_preset(preset)
    dataset = out / f"faces-{cfg.resolution}.zip"
    if not dataset.is_file():
        build_dataset(data, dataset, cfg.resolution, max_images=max_images)
    run_dir = out / "run"
    train(TrainOptions(data=str(dataset), out=str(run_dir), preset=preset, kimg=10_000, seed=seed,
                       resume="auto", max_seconds=minutes * 60))
    G = load_generator(run_dir)
    grid = out / "faces.png"
    seeds = parse_seeds("0-63")
    save_images(generate_images(G, seeds, truncation_psi=0.7), seeds, grid, cols=8)
    print(f"generated {len(seeds)} faces: {grid}", file=sys.stderr)
    return grid
