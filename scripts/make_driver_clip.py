"""Makes the driving clip that ships with `facesynth serve`: src/facesynth/web/drivers/astronaut.mp4.

The talking-head page needs a clip of a face that moves and talks, and no real video we have may be
shipped.  So one is made from a still: scikit-image's `astronaut` (Eileen Collins, a NASA photograph in
the public domain), with the head turning, tilting and nodding (a rotation and shift about the neck)
and the jaw opening and closing in a speech-like rhythm (the chin and lower lip warped downwards, the
gap between the lips darkened).  Only the landmarks' motion is used by the animation, and dlib tracks
it in this clip as in a real one; this script checks that before writing.

    .venv/bin/python scripts/make_driver_clip.py [--out PATH] [--seconds 4]
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

SIZE = 256
FPS = 25
CROP = (102, 20, 240)
ROOT = Path(__file__).resolve().parents[1]  # x0, y0, side: head and shoulders of the 512x512 photo


def source_image() -> tuple[np.ndarray, np.ndarray]:
    """The cropped photo (uint8 [SIZE, SIZE, 3]) and its 68 landmarks in crop pixels."""
    from PIL import Image
    from skimage.data import astronaut

    from facesynth.data.align import LandmarkDetector

    x0, y0, side = CROP
    img = np.asarray(Image.fromarray(astronaut()[y0:y0 + side, x0:x0 + side]).resize((SIZE, SIZE), Image.LANCZOS))
    faces = LandmarkDetector().faces(img)
    assert faces, "dlib found no face in the crop"
    return img, faces[0].landmarks


def motion(t: float) -> tuple[float, float, float, float]:
    """(rotation in degrees, dx, dy in pixels, mouth opening in pixels) at time t seconds: slow head
    movement, and syllables at about 4 Hz under a phrase envelope with pauses."""
    angle = 6 * math.sin(2 * math.pi * t / 3.1) + 2 * math.sin(2 * math.pi * t / 1.3)
    dx = 5 * math.sin(2 * math.pi * t / 2.3)
    dy = 4 * math.sin(2 * math.pi * t / 1.7 + 1.0)
    phrase = max(0.0, math.sin(2 * math.pi * t / 2.0 + 0.3)) ** 0.5
    syllable = 0.5 - 0.5 * math.cos(2 * math.pi * 4.2 * t)
    return angle, dx, dy, 9.0 * phrase * syllable


def render(img: torch.Tensor, lm: np.ndarray, angle: float, dx: float, dy: float, opening: float) -> np.ndarray:
    """One frame: the jaw opened by ``opening`` px, then the head rotated and shifted about the neck."""
    h = w = SIZE
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    # Undo the head motion: rotate back about a pivot below the chin.
    pivot = torch.tensor([lm[8, 0], lm[8, 1] + 30.0])
    a = math.radians(-angle)
    px, py = xs - dx - pivot[0], ys - dy - pivot[1]
    sx = pivot[0] + math.cos(a) * px - math.sin(a) * py
    sy = pivot[1] + math.sin(a) * px + math.cos(a) * py
    # Undo the jaw drop: below the lips' meeting line, points came from higher up, fading out past the chin.
    mouth_y = float(lm[[61, 62, 63, 65, 66, 67], 1].mean())
    chin_y, cx = float(lm[8, 1]), float(lm[[48, 54], 0].mean())
    half_w = float(lm[54, 0] - lm[48, 0]) / 2
    down = ((sy - mouth_y) / 4).clamp(0, 1) * (1 - ((sy - chin_y) / 25).clamp(0, 1))
    across = torch.exp(-((sx - cx) / half_w) ** 2)
    sy = sy - opening * down * across
    grid = torch.stack([sx / (w - 1) * 2 - 1, sy / (h - 1) * 2 - 1], -1)[None]
    out = F.grid_sample(img, grid, mode="bilinear", padding_mode="border", align_corners=True)[0]
    # The open mouth: a dark ellipse between the lips, moved with the head.
    if opening > 0.5:
        ex, ey = cx, mouth_y + opening / 2
        rx, ry = 0.45 * float(lm[64, 0] - lm[60, 0]), opening / 2  # most of the inner lips' width
        qx, qy = xs - dx - pivot[0], ys - dy - pivot[1]  # the ellipse lives in head coordinates too
        hx = pivot[0] + math.cos(a) * qx - math.sin(a) * qy
        hy = pivot[1] + math.sin(a) * qx + math.cos(a) * qy
        r = ((hx - ex) / rx) ** 2 + ((hy - ey) / ry) ** 2
        alpha = (1 - r).clamp(0, 1).sqrt() * 0.9
        dark = torch.tensor([0.16, 0.05, 0.07]).view(3, 1, 1)
        out = out * (1 - alpha) + dark * alpha
    return (out.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(ROOT / "src/facesynth/web/drivers/astronaut.mp4"))
    p.add_argument("--seconds", type=float, default=4.0)
    args = p.parse_args()

    from facesynth.data.video import track_landmarks
    from facesynth.util.video import write_video

    img, lm = source_image()
    src = torch.from_numpy(img.copy()).permute(2, 0, 1).float().div(255)[None]
    frames = [render(src, lm, *motion(i / FPS)) for i in range(round(args.seconds * FPS))]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_video(frames, out, fps=FPS, quality=7)
    # The clip is only useful if dlib follows it: every frame tracked, and the mouth seen opening.
    tracked = track_landmarks(out)
    missing = sum(t is None for t in tracked)
    gaps = [float(t[66, 1] - t[62, 1]) for t in tracked if t is not None]
    print(f"{out}: {len(frames)} frames, {out.stat().st_size / 1024:.0f} KiB; dlib tracked {len(tracked) - missing}, "
          f"inner-lip gap {min(gaps):.1f}-{max(gaps):.1f} px")
    assert missing == 0 and max(gaps) - min(gaps) > 3, "dlib does not follow the clip well enough"


if __name__ == "__main__":
    main()
