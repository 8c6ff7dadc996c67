"""The training images every trainer reads: UTKFace resized once to a folder of PNGs per resolution.

The peers read image folders; facesynth reads the same folder, so all see identical pixels (resized here
once by facesynth's dataset builder: centre square, box reduction then Lanczos).  Re-running is a no-op.

    .venv/bin/python benchmarks/peers/prepare_data.py --res 32,64
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import zipfile
from pathlib import Path

from facesynth.data.build import DATASET_JSON, build_dataset

HERE = Path(__file__).resolve().parent
UTKFACE = HERE.parents[2] / "shared" / "data" / "faces" / "utkface-200.zip"
DATA = HERE / "data"


def image_folder(res: int, src: Path = UTKFACE, root: Path = DATA) -> Path:
    """``root``/utkface<res>/ with one PNG per face, made once.

    ``utkface<res>.json`` beside it marks a complete folder (not inside: pro-gan-pth reads every file there).
    """
    out, done = root / f"utkface{res}", root / f"utkface{res}.json"
    if done.is_file():
        return out
    if not src.is_file():
        raise SystemExit(f"{src}: not found (the UTKFace zip of ../shared; see ../shared/README.md)")
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        zpath = Path(tmp) / "faces.zip"
        meta = build_dataset(src, zpath, res, quiet=True)
        with zipfile.ZipFile(zpath) as zf:
            for name in zf.namelist():
                if name != DATASET_JSON:
                    (out / name).write_bytes(zf.read(name))
    done.write_text(json.dumps({"count": meta["count"], "resolution": res, "source": str(src)}))
    print(f"{out}: {meta['count']} images at {res}x{res}", file=sys.stderr)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--res", default="32,64", help="comma-separated resolutions")
    args = ap.parse_args()
    for res in args.res.split(","):
        print(image_folder(int(res)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
