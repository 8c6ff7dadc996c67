"""A fixed held-out split of a face zip: 10% of the photos, chosen by a hash of each file's name (so the split
never changes and never depends on the order of the zip), are kept aside for measuring and never trained on.
Writes two facesynth datasets at the given resolution.

    python benchmarks/heldout_split.py [--src ../shared/data/faces/utkface-200.zip] --out runs/data --resolution 64
    -> runs/data/utk64-train.zip (about 90%), runs/data/utk64-heldout.zip (about 10%)

UTKFace names its files age_gender_race_date.jpg: ``--min-age 70`` keeps the faces aged 70 and over (the same
split, restricted), the small set for fine-tuning.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import tempfile
import zipfile
from pathlib import Path

from facesynth.data.build import build_dataset

HERE = Path(__file__).resolve().parent
DEFAULT_SRC = HERE.parents[1] / "shared" / "data" / "faces" / "utkface-200.zip"


def is_heldout(name: str, percent: int = 10) -> bool:
    return int(hashlib.sha256(Path(name).name.encode()).hexdigest(), 16) % 100 < percent


def utkface_age(name: str) -> int | None:
    m = re.match(r"(\d+)_", Path(name).name)
    return int(m.group(1)) if m else None


def split_zip(src: Path, work: Path, percent: int, min_age: int = 0) -> tuple[Path, Path]:
    """Two zips of the source's images (those aged ``min_age`` and over, if given): (train, held out)."""
    train, held = work / "train-src.zip", work / "heldout-src.zip"
    with zipfile.ZipFile(src) as z, zipfile.ZipFile(train, "w") as zt, zipfile.ZipFile(held, "w") as zh:
        for info in z.infolist():
            if info.is_dir() or (min_age and (utkface_age(info.filename) or 0) < min_age):
                continue
            (zh if is_heldout(info.filename, percent) else zt).writestr(info.filename, z.read(info))
    return train, held


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", default=str(DEFAULT_SRC))
    ap.add_argument("--out", required=True, help="folder for <name>-train.zip and <name>-heldout.zip")
    ap.add_argument("--name", default=None, help="file name stem (default: utk<resolution>)")
    ap.add_argument("--resolution", type=int, default=64)
    ap.add_argument("--percent", type=int, default=10)
    ap.add_argument("--min-age", type=int, default=0, help="keep only UTKFace faces at least this old")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = args.name or f"utk{args.resolution}"
    with tempfile.TemporaryDirectory() as tmp:
        train, held = split_zip(Path(args.src), Path(tmp), args.percent, args.min_age)
        for part, src in (("train", train), ("heldout", held)):
            build_dataset(src, out / f"{name}-{part}.zip", args.resolution, quiet=True)
            with zipfile.ZipFile(out / f"{name}-{part}.zip") as z:
                print(f"{out / f'{name}-{part}.zip'}: {sum(n.endswith('.png') for n in z.namelist())} images")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
