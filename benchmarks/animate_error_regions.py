"""Where a talking head's error lies: mean absolute error (0-255) of self-reenactment, split by region.

On each held-out clip, 1 source frame (the first) renders 16 targets from the clip's second half, as `animate
eval` does; each target's own landmarks cut the picture into the mouth (the outer lip contour, 48-59), the eyes (36-47),
the rest of the face (the hull of jaw and brows, 0-26) and everything outside it (hair, neck, shoulders,
background).  Rows: the repeated source frame, the untrained face-local TPS warp, and each checkpoint given.

    python benchmarks/animate_error_regions.py --data runs/clips128 --ckpt MODEL [--ckpt ANOTHER_MODEL]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
import torch
from report import environment, write_results

from facesynth.animate.episodes import load_videos
from facesynth.animate.evaluate import TPS_FACE_FALLOFF, heldout_clips_of, load_family
from facesynth.animate.reenact import Portrait
from facesynth.animate.warp_model import TPSTalker

REGIONS = ("outside", "face", "eyes", "mouth")


def region_masks(landmarks: np.ndarray, size: int) -> dict[str, np.ndarray]:
    """Boolean masks [size, size] of the four regions, which do not overlap and cover the picture."""
    def hull(points: np.ndarray) -> np.ndarray:
        m = np.zeros((size, size), np.uint8)
        cv2.fillConvexPoly(m, cv2.convexHull(points.round().astype(np.int32)), 1)
        return m.astype(bool)

    face, mouth = hull(landmarks[:27]), hull(landmarks[48:60])
    eyes = hull(landmarks[36:42]) | hull(landmarks[42:48])
    return {"outside": ~face, "face": face & ~mouth & ~eyes, "eyes": eyes & face, "mouth": mouth & face & ~eyes}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="clips prepared by `facesynth animate prepare`")
    ap.add_argument("--ckpt", action="append", required=True, help="a warping model (repeat to compare)")
    ap.add_argument("--targets", type=int, default=16, help="targets per clip")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    families = {c: load_family(c, "cpu") for c in args.ckpt}
    first = next(iter(families.values()))
    size = first.cfg.resolution
    videos = load_videos(args.data, size, include=heldout_clips_of(first), quiet=True)
    sums: dict[str, dict[str, list[float]]] = {}
    for v in videos:
        n = len(v.frames)
        targets = np.unique(np.linspace(n // 2, n - 1, args.targets).round().astype(int))
        truth = v.frames[targets].permute(0, 2, 3, 1).numpy().astype(np.float32)
        landmarks = np.asarray(v.landmarks[targets])
        source = Portrait(v.name, v.frames[0].permute(1, 2, 0).numpy(), v.drawings[0].permute(1, 2, 0).numpy(),
                          v.landmarks[0])
        outputs = {"repeated source frame": np.repeat(source.image[None], len(targets), 0),
                   "tps-face (no learning)": np.stack(list(TPSTalker(source.image, source.landmarks, size,
                                                                     TPS_FACE_FALLOFF).render(landmarks)))}
        for name, family in families.items():
            outputs[name] = np.stack(list(family.talker([source]).render(landmarks)))
        masks = [region_masks(lm, size) for lm in landmarks]
        for name, frames in outputs.items():
            err = np.abs(frames.astype(np.float32) - truth).mean(-1)
            for e, m in zip(err, masks):
                for region in REGIONS:
                    s = sums.setdefault(name, {}).setdefault(region, [0.0, 0])
                    s[0] += float(e[m[region]].sum())
                    s[1] += int(m[region].sum())
    rows = {}
    for name, by_region in sums.items():
        total, pixels = sum(s[0] for s in by_region.values()), sum(s[1] for s in by_region.values())
        rows[name] = {"all": total / pixels, **{r: {"mae": s[0] / max(s[1], 1), "share_of_error": s[0] / total,
                                                     "share_of_pixels": s[1] / pixels}
                                                 for r, s in by_region.items()}}
    lines = [f"Mean absolute error (0-255) of 1-shot self-reenactment on {len(videos)} held-out clips "
             f"({args.targets} targets each, {size}²); in brackets each region's share of the error / of the pixels.",
             "", "| output | all | " + " | ".join(REGIONS) + " |", "|---" * (2 + len(REGIONS)) + "|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['all']:.2f} | " + " | ".join(
            f"{r[g]['mae']:.2f} ({100 * r[g]['share_of_error']:.0f}% / {100 * r[g]['share_of_pixels']:.1f}%)"
            for g in REGIONS) + " |")
    write_results(args.out, "animate_error_regions", {"environment": environment(), "clips": [v.name for v in videos],
                                                       "targets_per_clip": args.targets, "rows": rows}, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
