"""Figures of the talking head: portraits animated by a driving clip, and its steadiness over time.

1. Per portrait, ``animate-<name>.png``: rows at a few moments of the driver, each source | driver | output.
2. ``animate-temporal.png``: on a self-reenacted clip (its first frame the source, its own landmarks the
   motion), the mean change from each frame to the next of the output and of the real frames, as a chart,
   with the numbers in ``animate-temporal.json``.
3. ``animate-identity.json``: for every portrait of ../shared/data/talking/portraits, the identity cosine (dlib's
   descriptors) of each animated frame against the portrait itself, and whether dlib finds a face in it.
Default: the bundled model; a photo, two paintings and the 3D face from ../shared/data/talking/portraits;
a held-out person's clip as the driver.

    python benchmarks/animate_figures.py [--ckpt MODEL] [--driver clip.mp4] [--out docs/animate]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from facesynth.animate.evaluate import frame_change
from facesynth.animate.reenact import (load_portraits, load_talker, reference_frame, retarget, talking_checkpoint,
                                       talking_config, track_driver)

HERE = Path(__file__).resolve().parent
TALKING = HERE.parents[1] / "shared" / "data" / "talking"
PORTRAITS = {"photo": "s42.jpg", "painting": "s3.jpg", "painting-2": "s8.jpg", "3d-face": "s7.jpg",
             "photo-bw": "s2.jpg"}
SHOW = 192


def animate_frames(ckpt, source: Path, driver, resolution: int, moments: list[int]):
    portrait = load_portraits([source], resolution, quiet=True)[0]
    talker, _ = load_talker(ckpt, [portrait])
    ref = reference_frame(portrait.landmarks, driver.landmarks)
    motion = retarget(portrait.landmarks, driver.landmarks, ref)
    outputs = list(talker.render(motion[moments]))
    frames = list(driver.frames(resolution))
    return portrait.image, [frames[i] for i in moments], outputs


def portrait_identity(ckpt, driver, resolution: int, frames: int = 24) -> dict:
    """Per portrait: mean and least identity cosine of ``frames`` animated frames (spread over the driver)
    against the portrait, and the share of them where dlib finds a face."""
    from facesynth.animate.episodes import to_unit
    from facesynth.metrics.identity import FaceDescriber, identity_similarity

    describer = FaceDescriber()
    moments = np.unique(np.linspace(0, len(driver.landmarks) - 1, frames).round().astype(int)).tolist()
    rows = {}
    for file in sorted((TALKING / "portraits").glob("*.jpg"), key=lambda p: p.name):
        source, _, outs = animate_frames(ckpt, file, driver, resolution, moments)
        outs = to_unit(torch.from_numpy(np.stack(outs)).permute(0, 3, 1, 2))
        reference = to_unit(torch.from_numpy(source.copy()).permute(2, 0, 1))[None].expand(len(outs), -1, -1, -1)
        scores = identity_similarity(describer, outs, reference)
        cos = [s["cosine"] for s in scores]
        rows[file.stem] = {"frames": len(cos), "identity_mean": float(np.mean(cos)), "identity_min": float(np.min(cos)),
                           "face_found": float(np.mean([s["detected"] for s in scores]))}
    return rows


def grid_png(rows: list[list[np.ndarray]], path: Path, labels=("source", "driver", "output")) -> None:
    cols = len(rows[0])
    sheet = Image.new("RGB", (cols * SHOW, 18 + len(rows) * SHOW), "white")
    draw = ImageDraw.Draw(sheet)
    for c, label in enumerate(labels[:cols]):
        draw.text((c * SHOW + 4, 3), label, fill="black")
    for r, row in enumerate(rows):
        for c, img in enumerate(row):
            sheet.paste(Image.fromarray(img).resize((SHOW, SHOW), Image.LANCZOS), (c * SHOW, 18 + r * SHOW))
    sheet.save(path)


def per_frame_change(frames: np.ndarray) -> np.ndarray:
    return np.abs(np.diff(frames.astype(np.float32), axis=0)).mean(axis=(1, 2, 3))


def chart_png(series: dict[str, np.ndarray], path: Path, title: str) -> None:
    w, h, pad = 720, 300, 40
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    top = max(float(s.max()) for s in series.values()) * 1.1 or 1.0
    n = max(len(s) for s in series.values())
    d.rectangle([pad, pad, w - pad, h - pad], outline="black")
    d.text((pad, 10), title, fill="black")
    d.text((4, pad - 6), f"{top:.1f}", fill="black")
    d.text((4, h - pad - 6), "0", fill="black")
    d.text((w - pad - 60, h - pad + 8), f"frame ({n})", fill="black")
    colours = ["#1f77b4", "#d62728", "#2ca02c"]
    for j, (name, s) in enumerate(series.items()):
        pts = [(pad + i * (w - 2 * pad) / max(n - 1, 1), h - pad - v / top * (h - 2 * pad)) for i, v in enumerate(s)]
        d.line(pts, fill=colours[j % 3], width=2)
        d.text((w - pad - 250, pad + 6 + 14 * j), f"{name}: mean {s.mean():.2f} levels/frame", fill=colours[j % 3])
    img.save(path)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", default=None)
    ap.add_argument("--driver", default=str(TALKING / "more-videos" / "EDTalk-mouth_source.mp4"))
    ap.add_argument("--frames", type=int, default=120, help="driver frames read")
    ap.add_argument("--out", default=str(HERE.parent / "docs" / "animate"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt = talking_checkpoint(args.ckpt)
    res = talking_config(ckpt).resolution
    driver = track_driver(args.driver, res, max_frames=args.frames, quiet=True)
    n = len(driver.landmarks)
    moments = [int(round(x)) for x in np.linspace(0, n - 1, 4)]
    for name, file in PORTRAITS.items():
        source, drv, outs = animate_frames(ckpt, TALKING / "portraits" / file, driver, res, moments)
        grid_png([[source, d, o] for d, o in zip(drv, outs)], out / f"animate-{name}.png")
        print(out / f"animate-{name}.png")
    # Steadiness: the driver clip re-rendered from its own first frame and landmarks.
    real = np.stack(list(driver.frames(res)))
    from facesynth.animate.reenact import Portrait
    from facesynth.animate.episodes import landmark_image

    first = Portrait("first frame", real[0], landmark_image(driver.landmarks[0], res, res), driver.landmarks[0])
    talker, _ = load_talker(ckpt, [first])
    rendered = np.stack(list(talker.render(driver.landmarks)))
    series = {"real frames": per_frame_change(real), "output": per_frame_change(rendered)}
    ratio = frame_change(rendered) / frame_change(real)
    chart_png(series, out / "animate-temporal.png",
              f"{Path(args.driver).name}: frame-to-frame change (0-255 levels), output/real = {ratio:.2f}")
    grid_png([[real[0], real[i], rendered[i]] for i in moments[1:]], out / "animate-self.png")
    (out / "animate-temporal.json").write_text(json.dumps(
        {"driver": Path(args.driver).name, "frames": n, "real_change": frame_change(real),
         "output_change": frame_change(rendered), "ratio": ratio}, indent=2) + "\n")
    print(out / "animate-temporal.png", f"ratio {ratio:.2f}")
    identity = portrait_identity(ckpt, driver, res)
    (out / "animate-identity.json").write_text(json.dumps(
        {"driver": Path(args.driver).name, "checkpoint": str(ckpt), "portraits": identity}, indent=2) + "\n")
    print("| portrait | identity cos (mean) | least | face found |\n|---|---|---|---|")
    for name, r in identity.items():
        print(f"| {name} | {r['identity_mean']:.3f} | {r['identity_min']:.3f} | {r['face_found']:.0%} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
