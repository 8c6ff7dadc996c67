"""`facesynth dataset`: any pile of images -> a zip of square PNGs plus dataset.json."""

from __future__ import annotations

import io
import json
import sys
import zipfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from ..errors import FacesynthError
from ..util.atomic import atomic_path
from .align import NoFace
from .images import (BadImage, ImageSource, check_resolution, decode_image, given_path, prepare_image, printable,
                     shown)

DATASET_JSON = "dataset.json"
MAX_LISTED = 1000  # skipped files named in dataset.json (all are counted)


def _encode_png(img) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def build_dataset(src: str | Path, dest: str | Path, resolution: int, square: str = "crop",
                  max_images: int | None = None, workers: int = 2, quiet: bool = False,
                  align: bool = False, landmarks: str | Path | None = None, framing: str = "ffhq") -> dict:
    """Convert ``src`` into ``dest`` (a .zip).  Returns the dataset.json contents.

    Unreadable files are skipped with one line each (and counted per problem in dataset.json's
    ``skipped_problems``, listed in ``skipped_files``); the zip is written to a
    temporary name and renamed only when complete.  With ``align``, each photo's
    largest face is found and cropped as FFHQ's were (photos without one are skipped).
    """
    check_resolution(resolution)
    given_path(src, "source")  # both refused before anything is read: "" would be the current folder
    dest = given_path(dest, "destination")
    if dest.suffix.lower() != ".zip":
        raise FacesynthError(f"{shown(dest)}: the output must be a .zip file")
    if square not in ("crop", "pad"):
        raise FacesynthError(f"square mode must be crop or pad, not {square!r}")
    source = ImageSource(src)
    n = len(source) if max_images is None else min(len(source), max_images)
    if n == 0:
        raise FacesynthError(f"{shown(src)}: no images found (looked for .png, .jpg, .jpeg, .webp, .bmp, .tif, .gif)")

    if align:
        from .align import get_framing, landmark_model_path

        landmarks = landmark_model_path(landmarks)  # fail now, not once per image
        get_framing(framing)

    def prepare(i: int, name: str):
        if not align:
            return prepare_image(source.read(i), name, resolution, square)
        from .align import align_image, thread_detector

        return align_image(decode_image(source.read(i), name), resolution, thread_detector(landmarks), name,
                           framing).image

    def work(i: int):
        name = source.names[i]
        try:
            return name, _encode_png(prepare(i, name)), None
        except BadImage as e:
            return name, None, (e.problem, str(e))
        except NoFace as e:
            return name, None, ("no_face", str(e))
        except Exception as e:  # a decoder bug must not end a 20k-image job
            return name, None, ("error", f"{shown(name)}: {type(e).__name__}: {printable(e)}")

    written, skipped = 0, []
    with atomic_path(dest) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
        # Threads: PIL releases the GIL while decoding and resizing.
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            results = pool.map(work, range(n))
            for name, png, err in tqdm(results, total=n, desc="dataset", unit="img", disable=quiet,
                                       file=sys.stderr, dynamic_ncols=True):
                if err is not None:
                    skipped.append({"name": name, "problem": err[0], "message": err[1]})
                    tqdm.write(f"skipped {err[1]}", file=sys.stderr)  # once per file: one line naming it
                    continue
                zf.writestr(f"{written:08d}.png", png)
                written += 1
        if written == 0:
            raise FacesynthError(f"{shown(src)}: none of the {n} files could be read as an image")
        meta = {
            "format": "facesynth-dataset-1",
            "resolution": resolution,
            "count": written,
            "skipped": len(skipped),
            "skipped_problems": skipped_problems(skipped),
            "skipped_files": skipped[:MAX_LISTED],
            "square": f"{framing}-align" if align else square,
            "source": str(src),
        }
        zf.writestr(DATASET_JSON, json.dumps(meta, indent=2))
    if not quiet:
        why = ", ".join(f"{k}: {v}" for k, v in meta["skipped_problems"].items())
        print(f"wrote {written} images at {resolution}x{resolution} to {shown(dest)}; skipped {len(skipped)}"
              + (f" ({why})" if why else ""), file=sys.stderr)
    return meta


def skipped_problems(skipped: list[dict]) -> dict[str, int]:
    """{problem: count} of skipped files, most frequent first (problems: data.images.PROBLEMS, and no_face)."""
    return dict(Counter(s["problem"] for s in skipped).most_common())


def read_dataset_meta(path: str | Path) -> dict | None:
    """dataset.json of a facesynth zip, or None for any other source."""
    path = Path(path)
    if path.suffix.lower() != ".zip" or not path.is_file():
        return None
    try:
        with zipfile.ZipFile(path) as zf:
            if DATASET_JSON not in zf.namelist():
                return None
            meta = json.loads(zf.read(DATASET_JSON))
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise FacesynthError(f"{shown(path)}: unreadable dataset zip ({printable(e)})") from None
    return meta if isinstance(meta, dict) else None
