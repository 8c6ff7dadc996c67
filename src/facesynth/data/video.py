"""Talking-head data: videos -> tracked 68-point landmarks -> one steady head-and-shoulders crop per clip.

A prepared folder holds ``index.json`` and one ``<name>.npz`` per clip (JPEG-encoded crops concatenated, their
offsets, landmarks in crop pixels, source frame numbers; no pickles) and ``previews/<name>.jpg`` to check by eye.
Landmarks come from dlib (see ``align.py``): the detector finds the face, then the shape predictor follows it from
frame to frame on a box derived from the last landmarks, nudged each frame toward the detector's box in a small
window (tracking alone drifts off a fast-shaking head; the detector alone jitters).
The crop is fixed for the whole clip, as in VoxCeleb, so the head moves inside it and the background stays still.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ..errors import FacesynthError
from ..util.atomic import atomic_path, check_writable_dir, write_json_atomic
from .align import MIN_EYE_DISTANCE, LandmarkDetector, NoFace, thread_detector
from .images import shown

VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".webm")
FORMAT, VERSION = "facesynth-clips", 1
JPEG_QUALITY = 95
REDETECT_EVERY = 1  # frames between detector runs while tracking (1: every frame, which fast heads need)
BLEND = 0.3  # how far each detection pulls the tracked box: damps the detector's jitter, stops drift
MAX_BLIND = 15  # frames tracked on without the detector before the face counts as lost
AGREE = 0.7  # IoU below which the tracked and detected boxes disagree and the detection wins
DETECT_SIDE = 480  # a whole frame is searched shrunk to at most this size (faces in these clips stay large)
CROP_SCALE = 2.2  # crop side / the largest landmark-box extent in the clip: the head with hair, and shoulders
CROP_SHIFT = 0.05  # crop centre below the landmark-box centre, in extents: a little more shoulder than sky
PREVIEW_FRAMES = 6
NO_FACE = "no human face found (animals, faces turned far from the camera and very small faces are not detected)"


class NoFaceError(NoFace, FacesynthError):
    """No usable face: caught as align's NoFace, and reported by the CLI as a FacesynthError."""


# --------------------------------------------------------------------------- decoding

@dataclass
class VideoInfo:
    path: Path
    fps: float
    width: int
    height: int
    duration: float

    @property
    def frames(self) -> int:
        """The frame count the header promises (the decoded count can differ by a frame or two)."""
        return max(1, round(self.duration * self.fps))


def _ffmpeg_reason(e: Exception) -> str:
    """One line from ffmpeg's chatter that says what went wrong."""
    text = str(e)
    if "does not contain any stream" in text:
        return "no video stream"
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    pick = next((ln for ln in lines if "Invalid data" in ln or "moov atom" in ln), lines[-1] if lines else repr(e))
    return pick.split("] ", 1)[-1][:160]


def _open(path: Path):
    """imageio-ffmpeg's frame generator, past its metadata, and the VideoInfo."""
    if not path.is_file():
        raise FacesynthError(f"{shown(path)}: no such file")
    try:
        import imageio_ffmpeg
    except ImportError:
        raise FacesynthError("reading videos needs imageio-ffmpeg: pip install 'facesynth[video]'") from None
    gen = imageio_ffmpeg.read_frames(str(path))
    try:
        meta = next(gen)
        w, h = meta["size"]
    except (OSError, RuntimeError, StopIteration, KeyError, TypeError) as e:
        gen.close()
        raise FacesynthError(f"{shown(path)}: not a readable video (ffmpeg: {_ffmpeg_reason(e)})") from None
    fps = float(meta.get("fps") or 0) or 25.0  # a stream without a rate: assume PAL's
    return gen, VideoInfo(path, fps, int(w), int(h), float(meta.get("duration") or 0))


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """fps, size and duration from the header; FacesynthError naming the file when it is no video."""
    gen, info = _open(Path(path))
    gen.close()
    return info


def iter_frames(path: str | os.PathLike, max_frames: int | None = None) -> Iterator[np.ndarray]:
    """Decoded frames, uint8 [H, W, 3] RGB (read-only views), streamed: a long clip never sits in memory."""
    path = Path(path)
    gen, info = _open(path)
    try:
        for i, buf in enumerate(gen):
            if max_frames is not None and i >= max_frames:
                break
            yield np.frombuffer(buf, np.uint8).reshape(info.height, info.width, 3)
    except (OSError, RuntimeError) as e:
        raise FacesynthError(f"{shown(path)}: decoding failed ({_ffmpeg_reason(e)})") from None
    finally:
        gen.close()


def read_video(path: str | os.PathLike, max_frames: int | None = None) -> tuple[list[np.ndarray], float]:
    """All frames of a (short) video in memory, and its fps."""
    return list(iter_frames(path, max_frames)), probe_video(path).fps


# --------------------------------------------------------------------------- tracking

def _lm_box(lm: np.ndarray) -> tuple[np.ndarray, float]:
    """Centre and extent (longer side) of the landmarks' bounding box."""
    lo, hi = lm.min(0), lm.max(0)
    return (lo + hi) / 2, float((hi - lo).max())


class FaceTracker:
    """68 landmarks frame after frame.  The shape predictor runs on a box that blends two guesses: the box
    derived from the previous frame's landmarks (smooth, but it lags and drifts when the head moves fast) and
    dlib's detector run in a small window around it (unbiased, but its box jitters).  Each frame the tracked
    box moves a part of the way toward the detected one, or all of it when they disagree; where the detector
    misses (a turned face) the tracked box carries on for a while if the landmarks stay plausible."""

    def __init__(self, detector: LandmarkDetector, redetect: int = REDETECT_EVERY, note=None):
        self.det, self.redetect, self.note = detector, redetect, note or (lambda msg: None)
        self.lm: np.ndarray | None = None  # the last frame's landmarks (None: lost)
        self.last_seen: np.ndarray | None = None  # box where the face was last seen, searched first when lost
        self.rel = np.array([0.0, 0.1, 1.1])  # detector box vs landmark box: centre offset, side (in extents)
        self.since = 0  # frames since the last detection
        self.blind = 0  # frames tracked without the detector's confirmation
        self.started = False

    def _predict(self, frame: np.ndarray, box: Sequence[float]) -> np.ndarray:
        shape = self.det.predictor(frame, self.det._rect(*(int(round(v)) for v in box)))
        return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)

    def _box_from(self, lm: np.ndarray) -> np.ndarray:
        c, e = _lm_box(lm)
        c = c + self.rel[:2] * e
        half = self.rel[2] * e / 2
        return np.array([c[0] - half, c[1] - half, c[0] + half, c[1] + half])

    def _search(self, img: np.ndarray, scale: float, upsample: int, threshold: float) -> list[np.ndarray]:
        if scale < 1:
            h, w = img.shape[:2]
            img = np.asarray(Image.fromarray(img).resize((max(1, round(w * scale)), max(1, round(h * scale))),
                                                         Image.BILINEAR))
        rects, _, _ = self.det.detector.run(np.ascontiguousarray(img), upsample, threshold)
        return [np.array([r.left(), r.top(), r.right(), r.bottom()]) / scale for r in rects]

    def _detect_near(self, frame: np.ndarray, near: np.ndarray) -> np.ndarray | None:
        """The detector in a window twice the face's size around ``near``, shrunk so the face is ~120 px
        (cheap); the box overlapping ``near`` most."""
        h, w = frame.shape[:2]
        side = near[2] - near[0]
        x0, y0 = int(max(near[0] - side / 2, 0)), int(max(near[1] - side / 2, 0))
        x1, y1 = int(min(near[2] + side / 2, w)), int(min(near[3] + side / 2, h))
        if x1 - x0 < 16 or y1 - y0 < 16:
            return None
        found = [f + [x0, y0, x0, y0] for f in self._search(frame[y0:y1, x0:x1], min(1.0, 120 / side), 0, -0.3)]
        best = max(found, key=lambda f: _iou(f, near), default=None)
        return best if best is not None and _iou(best, near) > 0.3 else None

    def _detect_anywhere(self, frame: np.ndarray) -> np.ndarray | None:
        """The largest face in the whole frame (shrunk: faces in talking-head clips are large)."""
        h, w = frame.shape[:2]
        scale = min(1.0, DETECT_SIDE / max(h, w))
        found = self._search(frame, scale, 0, 0.0) or self._search(frame, scale, 1, 0.0)
        found.sort(key=lambda f: -(f[2] - f[0]) * (f[3] - f[1]))
        if found and not self.started and len(found) > 1:
            self.note(f"{len(found)} faces in the first frame with a face; following the largest")
        return found[0] if found else None

    def __call__(self, frame: np.ndarray) -> np.ndarray | None:
        """The frame's landmarks [68, 2] in frame pixels, or None when no face is found."""
        tracked = self._box_from(self.lm) if self.lm is not None else None
        self.since += 1
        found = None
        if tracked is None or self.since >= self.redetect:
            near = tracked if tracked is not None else self.last_seen
            found = self._detect_near(frame, near) if near is not None else None
            if found is None and tracked is None:
                found = self._detect_anywhere(frame)
            self.since = 0
        if found is not None:
            # Follow the detector fully when the boxes disagree (the track drifted or was lost), else partly.
            box = found if tracked is None or _iou(found, tracked) < AGREE else tracked + BLEND * (found - tracked)
            self.blind = 0
        elif tracked is not None and self.blind < MAX_BLIND:
            box = tracked
            self.blind += 1
        else:
            self.lm = None
            return None
        lm = self._predict(frame, box)
        c, e = _lm_box(lm)
        if e < 8 or (found is None and not _plausible(lm, self.lm)):
            self.lm = None  # the predictor collapsed or wandered: start again from a detection
            return None
        if found is not None:  # learn where the detector puts its box around the landmarks
            obs = np.array([*(((found[:2] + found[2:]) / 2 - c) / e), (found[2] - found[0]) / e])
            self.rel = obs if not self.started else self.rel + 0.1 * (obs - self.rel)
            self.started = True
        self.lm, self.last_seen = lm, self._box_from(lm)
        return lm


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter + 1e-9)


def _plausible(lm: np.ndarray, prev: np.ndarray) -> bool:
    """A face moves and scales a little between frames; a leap or collapse means the predictor lost it."""
    (c, e), (pc, pe) = _lm_box(lm), _lm_box(prev)
    eyes = np.hypot(*(lm[42:48].mean(0) - lm[36:42].mean(0)))
    return bool(np.hypot(*(c - pc)) < 0.25 * pe and 0.8 < e / pe < 1.25 and eyes > 0.15 * e)


# --------------------------------------------------------------------------- the crop

def head_crop(landmarks: Sequence[np.ndarray]) -> tuple[int, int, int]:
    """One square (x0, y0, side) in source pixels for all these landmark sets [68, 2]: centred on the median
    landmark box, a little lower; side CROP_SCALE x the largest landmark-box extent, grown further where needed
    so every frame's head (landmark box plus forehead and hair) stays inside.  It may leave the frame."""
    lm = np.stack([np.asarray(x, dtype=np.float64) for x in landmarks])
    lo, hi = lm.min(1), lm.max(1)  # [N, 2] each
    ext = (hi - lo).max(1)
    E = float(ext.max())
    cx, cy = np.median((lo + hi) / 2, axis=0)
    cy += CROP_SHIFT * E
    # The landmarks stop at the brows: forehead and hair reach about 0.6 extents above them.
    head_lo = lo - np.stack([0.15 * ext, 0.6 * ext], 1)
    head_hi = hi + np.stack([0.15 * ext, 0.15 * ext], 1)
    reach = max(np.abs(head_lo - [cx, cy]).max(), np.abs(head_hi - [cx, cy]).max())
    side = max(CROP_SCALE * E, 2 * reach, 8.0)
    return int(round(cx - side / 2)), int(round(cy - side / 2)), int(round(side))


def crop_frame(frame: np.ndarray, crop: Sequence[int], resolution: int) -> np.ndarray:
    """The square ``crop`` of a frame resized (Lanczos) to ``resolution``, edges repeated where it leaves the
    frame.  Edge padding rather than mirroring: a mirror would put a second face beside the first."""
    x0, y0, side = (int(v) for v in crop)
    h, w = frame.shape[:2]
    s = resolution / side
    # Resample only the part inside the frame, onto the output pixels lying wholly within it, then pad in the
    # output: much the same picture as padding the source first, at a fraction of the cost for big crops.
    ox0, oy0 = math.ceil(max(-x0, 0) * s), math.ceil(max(-y0, 0) * s)
    ox1, oy1 = math.floor(min(w - x0, side) * s), math.floor(min(h - y0, side) * s)
    if ox1 - ox0 < 1 or oy1 - oy0 < 1:
        raise ValueError(f"crop {tuple(crop)} lies outside the {w}x{h} frame")
    box = (x0 + ox0 / s, y0 + oy0 / s, x0 + ox1 / s, y0 + oy1 / s)
    img = Image.fromarray(frame)
    if side == resolution:
        out = np.asarray(img.crop(tuple(map(round, box))))  # no scaling: a plain cut
    else:
        out = np.asarray(img.resize((ox1 - ox0, oy1 - oy0), Image.LANCZOS, box=box, reducing_gap=2.0))
    if (ox0, oy0, ox1, oy1) != (0, 0, resolution, resolution):
        out = np.pad(out, ((oy0, resolution - oy1), (ox0, resolution - ox1), (0, 0)), mode="edge")
    return out


def picture_area(frame: np.ndarray, dark: int = 16) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) of a frame without black bars at its borders (letter- or pillarboxing), so padding
    repeats the picture's edge, not a bar's."""
    lit = frame.max(2) > dark
    cols, rows = np.flatnonzero(lit.mean(0) > 0.02), np.flatnonzero(lit.mean(1) > 0.02)
    h, w = lit.shape
    if len(cols) == 0 or len(rows) == 0:
        return 0, 0, w, h
    x0, x1, y0, y1 = cols[0], cols[-1] + 1, rows[0], rows[-1] + 1
    # Bars are thin; anything bigger is the picture being dark there.
    x0, y0 = (x0 if x0 < w // 4 else 0), (y0 if y0 < h // 4 else 0)
    x1, y1 = (x1 if x1 > w - w // 4 else w), (y1 if y1 > h - h // 4 else h)
    return int(x0), int(y0), int(x1), int(y1)


def to_crop(landmarks: np.ndarray, crop: Sequence[int], resolution: int) -> np.ndarray:
    """Frame-pixel landmarks -> pixels of the resized crop (pixel centres map onto pixel centres)."""
    x0, y0, side = crop
    return ((np.asarray(landmarks, np.float64) - [x0, y0] + 0.5) * (resolution / side) - 0.5).astype(np.float32)


# --------------------------------------------------------------------------- landmark images

# (first, last index, closed, colour): the face parts of the 68-point scheme, each its own colour.
FACE_PARTS = (
    (0, 16, False, (235, 235, 235)),  # jaw
    (17, 21, False, (255, 140, 0)),  # right brow
    (22, 26, False, (255, 230, 0)),  # left brow
    (27, 30, False, (0, 80, 255)),  # nose bridge
    (30, 35, False, (0, 220, 255)),  # lower nose
    (36, 41, True, (0, 210, 0)),  # right eye
    (42, 47, True, (255, 0, 255)),  # left eye
    (48, 59, True, (255, 0, 0)),  # outer lips
    (60, 67, True, (150, 80, 255)),  # inner lips
)


def draw_landmarks(landmarks: np.ndarray, size: int) -> np.ndarray:
    """The paper's landmark image: each face part a coloured polyline on black, uint8 [size, size, 3];
    ``landmarks`` [68, 2] are pixels of this image.  Lines about size/100 px wide."""
    img = Image.new("RGB", (size, size))
    draw = ImageDraw.Draw(img)
    width = max(1, round(size / 100))
    pts = [tuple(p) for p in np.asarray(landmarks, dtype=np.float64).tolist()]
    for first, last, closed, colour in FACE_PARTS:
        line = pts[first:last + 1] + (pts[first:first + 1] if closed else [])
        draw.line(line, fill=colour, width=width, joint="curve" if width > 2 else None)
    return np.asarray(img)


# --------------------------------------------------------------------------- storage

def _jpeg(img: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _preview(pairs: list[tuple[np.ndarray, np.ndarray, int]], path: Path) -> None:
    """Frames beside their landmark drawing (over the dimmed frame, to show the fit), three pairs a row."""
    size = min(pairs[0][0].shape[0], 192)
    tiles = []
    for img, lm, number in pairs:
        small = np.asarray(Image.fromarray(img).resize((size, size), Image.BILINEAR)) if img.shape[0] != size else img
        drawn = draw_landmarks((lm + 0.5) * (size / img.shape[0]) - 0.5, size)
        tile = Image.fromarray(np.concatenate([small, np.maximum(drawn, (small * 0.35).astype(np.uint8))], 1))
        ImageDraw.Draw(tile).text((3, 2), f"#{number}", fill=(255, 255, 0))
        tiles.append(np.asarray(tile))
    tiles += [np.zeros_like(tiles[0])] * (-len(tiles) % 3)
    rows = [np.concatenate(tiles[i:i + 3], 1) for i in range(0, len(tiles), 3)]
    with atomic_path(path) as tmp:
        tmp.write_bytes(_jpeg(np.concatenate(rows, 0), 90))


def write_clip(out: str | os.PathLike, name: str, frames: Iterable[np.ndarray],
               landmarks: Sequence[np.ndarray | None], resolution: int, fps: float, source: str = "",
               progress=None) -> dict:
    """Crop, encode and store one clip: ``frames`` are the source frames, ``landmarks[i]`` frame i's 68 points
    in its pixels or None where no face was found.  Writes ``out/<name>.npz`` and the preview atomically and
    returns the clip's index entry."""
    out = Path(out)
    kept = [i for i, lm in enumerate(landmarks) if lm is not None]
    if not kept:
        raise FacesynthError(f"{shown(source or name)}: no face found in any of its {len(landmarks)} frames")
    crop = head_crop([landmarks[i] for i in kept])
    show = {kept[round(j * (len(kept) - 1) / max(PREVIEW_FRAMES - 1, 1))] for j in range(PREVIEW_FRAMES)}
    chunks, lms, pairs, decoded, area = [], [], [], 0, None
    for i, frame in enumerate(frames):
        if i >= len(landmarks):
            break
        decoded = i + 1
        if progress is not None:
            progress.update()
        if landmarks[i] is None:
            continue
        if area is None:  # from the first kept frame: the bars of a clip do not move
            area = picture_area(frame)
        x0, y0, x1, y1 = area
        img = crop_frame(frame[y0:y1, x0:x1], (crop[0] - x0, crop[1] - y0, crop[2]), resolution)
        chunks.append(_jpeg(img))
        lms.append(to_crop(landmarks[i], crop, resolution))
        if i in show:
            pairs.append((img, lms[-1], i))
    if decoded < len(landmarks):
        raise FacesynthError(f"{shown(source or name)}: {decoded} frames decoded, {len(landmarks)} expected")
    offsets = np.zeros(len(chunks) + 1, np.int64)
    np.cumsum([len(c) for c in chunks], out=offsets[1:])
    arrays = {"jpeg": np.frombuffer(b"".join(chunks), np.uint8), "offsets": offsets,
              "landmarks": np.stack(lms).astype(np.float32), "frame_numbers": np.array(kept, np.int32)}
    with atomic_path(out / f"{name}.npz") as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)  # a file object: savez would add ".npz" to the temporary name
    _preview(pairs, out / "previews" / f"{name}.jpg")
    return {"name": name, "source": source, "fps": fps, "frames": len(landmarks), "kept": len(kept),
            "missing": [i for i, lm in enumerate(landmarks) if lm is None], "crop": list(crop),
            "area": list(area), "file": f"{name}.npz"}  # the picture in the frame: outside it the crop is padding


def track_landmarks(path: str | os.PathLike, detector: LandmarkDetector | None = None,
                    max_frames: int | None = None, quiet: bool = True, progress=None) -> list[np.ndarray | None]:
    """Every decoded frame's 68 landmarks [68, 2] in frame pixels, None where no face was found.  A progress
    bar of its own unless ``quiet`` or a ``progress`` (anything with .update()) is given."""
    from tqdm import tqdm

    path = Path(path)
    note = (lambda m: None) if quiet else (lambda m: tqdm.write(f"{shown(path.name)}: {m}", file=sys.stderr))
    tracker = FaceTracker(detector or thread_detector(), note=note)
    own = None
    if progress is None:
        total = min(probe_video(path).frames, max_frames or sys.maxsize)
        progress = own = tqdm(total=total, desc=f"{shown(path.name)}: landmarks", unit="frame", disable=quiet,
                              leave=False, file=sys.stderr)
    landmarks = []
    try:
        with contextlib.closing(iter_frames(path, max_frames)) as frames:
            for frame in frames:
                landmarks.append(tracker(frame))
                progress.update()
    finally:
        if own is not None:
            own.close()
    return landmarks


def prepare_clip(path: str | os.PathLike, out: str | os.PathLike, name: str, resolution: int = 256,
                 detector: LandmarkDetector | None = None, max_frames: int | None = None,
                 quiet: bool = True) -> dict:
    """Track one video's face, then crop and store it (two decoding passes: memory stays flat); the index entry."""
    from tqdm import tqdm

    path = Path(path)
    info = probe_video(path)
    total = min(info.frames, max_frames or info.frames)
    with tqdm(total=total * 2, desc=name, unit="frame", disable=quiet, leave=False, file=sys.stderr) as bar:
        landmarks = track_landmarks(path, detector, max_frames, quiet, bar)
        if len(landmarks) < 2:
            raise FacesynthError(f"{shown(path)}: {len(landmarks)} frame: a still image, not a video")
        bar.total = len(landmarks) * 2  # the header's count was an estimate
        with contextlib.closing(iter_frames(path, len(landmarks))) as frames:
            return write_clip(out, name, frames, landmarks, resolution, info.fps, str(path.resolve()), bar)


def _read_index(path: Path) -> dict:
    try:
        index = json.loads(path.read_text())
    except OSError as e:
        raise FacesynthError(f"{shown(path)}: cannot read ({e.strerror or e})") from None
    except ValueError as e:
        raise FacesynthError(f"{shown(path)}: not valid JSON ({e})") from None
    if not isinstance(index, dict) or index.get("format") != FORMAT or not isinstance(index.get("clips"), list):
        raise FacesynthError(f"{shown(path)}: not a prepared-clips index (format {FORMAT!r} expected)")
    if index.get("version") != VERSION:
        raise FacesynthError(f"{shown(path)}: clips index version {index.get('version')}, this facesynth reads "
                             f"{VERSION}")
    for c in index["clips"]:
        if not (isinstance(c, dict) and isinstance(c.get("name"), str) and isinstance(c.get("file"), str)):
            raise FacesynthError(f"{shown(path)}: malformed clip entry {str(c)[:80]}")
    return index


def write_index(out: str | os.PathLike, resolution: int, clips: Sequence[dict]) -> None:
    write_json_atomic(Path(out) / "index.json", {"format": FORMAT, "version": VERSION, "resolution": resolution,
                                                 "clips": list(clips)})


def prepare_videos(inputs: Sequence[str | os.PathLike], out: str | os.PathLike, resolution: int = 256,
                   landmarks: str | os.PathLike | None = None, quiet: bool = False,
                   max_frames: int | None = None) -> dict:
    """``facesynth animate prepare``: every video in ``inputs`` (files or folders) into the prepared folder
    ``out``.  Clips already there (same source and resolution) are skipped, so an interrupted run resumes;
    videos that cannot be read or show no face are reported and skipped.  Returns the summary."""
    from tqdm import tqdm

    from .images import check_resolution, collect_files

    check_resolution(resolution)
    files = collect_files(inputs, lambda name: Path(name).suffix.lower() in VIDEO_SUFFIXES,
                          f"videos ({', '.join(VIDEO_SUFFIXES)})")
    out = check_writable_dir(out)
    clips = {}
    if (out / "index.json").is_file():
        index = _read_index(out / "index.json")
        if index.get("resolution") != resolution:
            raise FacesynthError(f"{shown(out)} holds clips at {index.get('resolution')}², not {resolution}²: "
                                 "prepare into another folder")
        clips = {c["name"]: c for c in index["clips"]}
    by_source = {c.get("source"): c for c in clips.values() if (out / c["file"]).is_file()}
    detector = LandmarkDetector(landmarks)
    start, failed, done, skipped = time.time(), [], [], 0
    log = (lambda msg: None) if quiet else (lambda msg: tqdm.write(msg, file=sys.stderr))
    for f in tqdm(files, desc="clips", unit="clip", disable=quiet or len(files) < 2, file=sys.stderr):
        source = str(f.resolve())
        if source in by_source:
            skipped += 1
            continue
        name, n = f.stem, 1
        while name in clips and clips[name].get("source") != source:  # two folders' "a.mp4": a-2, a-3, ...
            n += 1
            name = f"{f.stem}-{n}"
        try:
            entry = prepare_clip(f, out, name, resolution, detector, max_frames, quiet)
        except FacesynthError as e:
            failed.append(str(e))
            if len(files) > 1:
                log(f"skipped {e}")
            continue
        clips[name] = by_source[source] = entry
        done.append(entry)
        write_index(out, resolution, clips.values())  # after every clip: an interrupted run keeps its work
        log(f"{shown(name)}: {entry['kept']}/{entry['frames']} frames kept" +
            (f", {len(entry['missing'])} without a face" if entry["missing"] else "") + f", crop {entry['crop']}")
    if not done and not skipped:
        raise FacesynthError("; ".join(failed) if len(failed) <= 3 else f"no clip prepared from {len(files)} videos "
                             f"(first: {failed[0]})")
    summary = {"clips": len(done), "already_done": skipped, "failed": len(failed),
               "frames": sum(c["frames"] for c in done), "kept": sum(c["kept"] for c in done),
               "missing": sum(len(c["missing"]) for c in done),
               "seconds": round(time.time() - start, 1), "out": str(out), "failed_files": failed}
    if not quiet:
        print(json.dumps({k: v for k, v in summary.items() if k != "failed_files"}), file=sys.stderr)
    return summary


# --------------------------------------------------------------------------- reading back

@dataclass(eq=False)
class Clip:
    """One prepared clip: ``len(clip)`` frames, ``clip.frame(i)`` uint8 [R, R, 3], ``clip.landmarks`` [N, 68, 2]
    in pixels of those frames."""
    name: str
    fps: float
    resolution: int
    landmarks: np.ndarray = field(repr=False)
    frame_numbers: np.ndarray = field(repr=False)
    jpeg: np.ndarray = field(repr=False)
    offsets: np.ndarray = field(repr=False)
    source: str = ""

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def frame(self, i: int) -> np.ndarray:
        if not -len(self) <= i < len(self):
            raise IndexError(f"clip {self.name} has {len(self)} frames, no frame {i}")
        i %= len(self)
        data = self.jpeg[self.offsets[i]:self.offsets[i + 1]].tobytes()
        with Image.open(io.BytesIO(data)) as im:
            return np.asarray(im.convert("RGB"))


def load_clips(path: str | os.PathLike) -> list[Clip]:
    """The clips of a prepared folder (or its index.json), each checked; FacesynthError naming the bad file."""
    path = Path(path)
    index_path = path / "index.json" if path.is_dir() else path
    if not index_path.is_file():
        raise FacesynthError(f"{shown(index_path)}: no such file (prepare clips with `facesynth animate prepare`)")
    index = _read_index(index_path)
    resolution, clips = index.get("resolution"), []
    for entry in index["clips"]:
        file = index_path.parent / entry["file"]
        try:
            fps = float(entry["fps"])
        except (KeyError, TypeError, ValueError):
            raise FacesynthError(f"{shown(index_path)}: clip {shown(entry['name'])} has no valid fps") from None
        try:
            with np.load(file, allow_pickle=False) as z:
                arrays = {k: z[k] for k in ("jpeg", "offsets", "landmarks", "frame_numbers")}
        except FileNotFoundError:
            raise FacesynthError(f"{shown(file)}: no such file (listed in {shown(index_path)})") from None
        except (OSError, ValueError, KeyError) as e:
            raise FacesynthError(f"{shown(file)}: not a prepared clip ({str(e)[:100] or type(e).__name__})") from None
        off, lm = arrays["offsets"], arrays["landmarks"]
        n = len(off) - 1
        if (n < 1 or lm.shape != (n, 68, 2) or arrays["frame_numbers"].shape != (n,) or off[0] != 0
                or off[-1] != arrays["jpeg"].size or np.any(np.diff(off) <= 0)):
            raise FacesynthError(f"{shown(file)}: inconsistent arrays (offsets {off.shape}, landmarks {lm.shape})")
        clips.append(Clip(entry["name"], fps, int(resolution), lm.astype(np.float32), arrays["frame_numbers"],
                          arrays["jpeg"], off, str(entry.get("source", ""))))
    return clips


# --------------------------------------------------------------------------- single photos

def prepare_image(image: np.ndarray | str | os.PathLike, resolution: int, detector: LandmarkDetector | None = None,
                  quiet: bool = False) -> tuple[np.ndarray, np.ndarray, tuple[int, int, int]]:
    """A portrait cropped as the clips are: (crop uint8 [R, R, 3], landmarks [68, 2] in crop pixels, crop box
    (x0, y0, side) in the photo).  NoFaceError (a NoFace and a FacesynthError) when there is no usable face;
    with several faces the largest is used and a line says so (unless ``quiet``)."""
    from .images import BadImage, decode_image, read_image_file

    name = "<image>"
    if not isinstance(image, np.ndarray):
        name = str(image)
        try:
            image = decode_image(read_image_file(image, name), name)
        except BadImage as e:
            raise FacesynthError(str(e)) from None
    faces = (detector or thread_detector()).faces(image)
    if not faces:
        raise NoFaceError(f"{shown(name)}: {NO_FACE}")
    face = faces[0]
    if face.eye_distance < MIN_EYE_DISTANCE:
        raise NoFaceError(f"{shown(name)}: the face is too small ({face.eye_distance:.0f} px between the eyes, "
                          f"at least {MIN_EYE_DISTANCE:.0f} needed)")
    if len(faces) > 1 and not quiet:
        print(f"{shown(name)}: {len(faces)} faces found; using the largest", file=sys.stderr)
    crop = head_crop([face.landmarks])
    x0, y0, x1, y1 = picture_area(image)
    img = crop_frame(image[y0:y1, x0:x1], (crop[0] - x0, crop[1] - y0, crop[2]), resolution)
    return img, to_crop(face.landmarks, crop, resolution), crop
