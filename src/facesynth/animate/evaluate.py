"""K-shot self-reenactment on held-out clips, next to the trivial baseline.

Per clip: K source frames spread over the clip's first half give the person (embedded, and optionally
fine-tuned); targets are frames spread over its second half, never seen as sources.  Each target is
generated from its own landmarks and compared with the true frame: SSIM, PSNR, identity cosine
(dlib's 128-D descriptors), and the landmark error of the output (dlib's 68 points found again in the
generated frame, mean distance over the inter-ocular distance, outer eye corners).  The baseline
answers every target with the first source frame: a model worth having must beat it.  FID between all
generated and all true target frames is added when there are at least ``fid_min`` of them.
"""

from __future__ import annotations

import sys
import time

import numpy as np
import torch
from tqdm import tqdm

from ..errors import FacesynthError
from ..metrics.similarity import psnr, ssim
from .episodes import load_videos, to_unit
from .finetune import finetune_person
from .model import load_run
from .reenact import Portrait, Talker, stack_portraits

UPSCALE_FOR_LANDMARKS = 256  # dlib needs faces larger than 64 px


def normalised_landmark_error(found: np.ndarray, truth: np.ndarray) -> float:
    inter_ocular = np.linalg.norm(truth[45] - truth[36])
    return float(np.linalg.norm(found - truth, axis=1).mean() / max(inter_ocular, 1e-6))


class FrameScorer:
    """SSIM, PSNR, identity and landmark error of generated frames against the true ones."""

    def __init__(self):
        from ..data.align import thread_detector
        from ..metrics.identity import FaceDescriber

        self.describer = FaceDescriber()
        self.detector = thread_detector()

    def landmarks(self, image: np.ndarray) -> np.ndarray | None:
        from PIL import Image

        r = image.shape[0]
        f = max(1, UPSCALE_FOR_LANDMARKS // r)
        big = np.asarray(Image.fromarray(image).resize((r * f, r * f), Image.LANCZOS))
        faces = self.detector.faces(big)
        return None if not faces else (faces[0].landmarks + 0.5) / f - 0.5

    def score(self, generated: np.ndarray, truth: np.ndarray, truth_landmarks: np.ndarray) -> dict:
        from ..metrics.identity import identity_similarity

        g = to_unit(torch.from_numpy(generated).permute(0, 3, 1, 2))
        t = to_unit(torch.from_numpy(truth).permute(0, 3, 1, 2))
        ident = identity_similarity(self.describer, g, t)
        rows = []
        for i in range(len(g)):
            found = self.landmarks(generated[i])
            rows.append({"ssim": float(ssim(g[i:i + 1], t[i:i + 1])[0]), "psnr": float(psnr(g[i:i + 1], t[i:i + 1])[0]),
                         "identity": ident[i]["cosine"], "face_found": found is not None,
                         "landmark_error": float("nan") if found is None else
                         normalised_landmark_error(found, truth_landmarks[i])})
        return rows


def _summary(rows: list[dict]) -> dict:
    def mean(key):
        vals = [r[key] for r in rows if r[key] == r[key]]
        return float(np.mean(vals)) if vals else float("nan")

    return {"frames": len(rows), "ssim": mean("ssim"), "psnr": mean("psnr"), "identity": mean("identity"),
            "landmark_error": mean("landmark_error"),
            "face_found": float(np.mean([r["face_found"] for r in rows])) if rows else float("nan")}


def evaluate(ckpt: str, data: str, clips: list[str] | None = None, shots=(1, 8), targets: int = 32,
             finetune_steps: int = 0, fid_min: int = 200, device="cpu", quiet: bool = False) -> dict:
    """Metrics per K (and for the baseline); ``clips`` default to those the run kept aside."""
    from .. import checkpoints as ck

    run = load_run(ckpt, device)
    cfg, nets, model_file = run
    if clips is None:
        state = ck.read_json(model_file.parent / "state.json", "training state")
        clips = list(state.get("exclude", []))
        if not clips:
            raise FacesynthError(f"{model_file}: the run kept no clips aside; name the clips to evaluate with --clips")
    videos = load_videos(data, cfg.resolution, include=clips, quiet=quiet)
    scorer = FrameScorer()
    results: dict[str, dict] = {}
    generated_all: dict[str, list[np.ndarray]] = {}
    truth_all: list[np.ndarray] = []
    t0 = time.time()
    for v in tqdm(videos, desc="evaluate", unit="clip", disable=quiet, file=sys.stderr):
        n = len(v.frames)
        if n < 2 * max(shots) + 2:
            raise FacesynthError(f"clip {v.name}: {n} frames, too few for {max(shots)} sources and held-out targets")
        half = n // 2
        tgt = np.unique(np.linspace(half, n - 1, min(targets, n - half)).round().astype(int))
        truth = v.frames[tgt].permute(0, 2, 3, 1).numpy()
        truth_all.append(truth)
        lms = v.landmarks[tgt]
        for k in shots:
            src = np.unique(np.linspace(0, half - 1, k).round().astype(int))
            portraits = [Portrait(f"{v.name}#{i}", v.frames[i].permute(1, 2, 0).numpy(),
                                  v.drawings[i].permute(1, 2, 0).numpy(), v.landmarks[i]) for i in src]
            if finetune_steps:
                person, _ = finetune_person(run, portraits, steps=finetune_steps, device=device, quiet=True)
                talker = Talker(person["G"], person["psi"], cfg.resolution, device)
            else:
                frames, drawings = stack_portraits(portraits)
                with torch.no_grad():
                    psi = nets["G"].psi(nets["E"](frames.to(device), drawings.to(device)))
                talker = Talker(nets["G"], psi, cfg.resolution, device)
            gen = np.stack(list(talker.render(lms)))
            generated_all.setdefault(f"{k}-shot", []).append(gen)
            results.setdefault(f"{k}-shot", []).extend(scorer.score(gen, truth, lms))
            if k == shots[0]:
                base = np.repeat(v.frames[src[:1]].permute(0, 2, 3, 1).numpy(), len(tgt), axis=0)
                generated_all.setdefault("baseline", []).append(base)
                results.setdefault("baseline", []).extend(scorer.score(base, truth, lms))
    table = {name: _summary(rows) for name, rows in results.items()}
    total = sum(len(t) for t in truth_all)
    if total >= fid_min:
        from ..metrics.inception import feature_extractor
        from ..metrics.stats import fid_from_features

        ext = feature_extractor(device)
        real = ext(torch.from_numpy(np.concatenate(truth_all)).permute(0, 3, 1, 2).contiguous())
        for name, gens in generated_all.items():
            fake = ext(torch.from_numpy(np.concatenate(gens)).permute(0, 3, 1, 2).contiguous())
            table[name]["fid"] = float(fid_from_features(real, fake))
    return {"checkpoint": str(model_file), "clips": [v.name for v in videos], "targets_per_clip": targets,
            "finetune_steps": finetune_steps, "resolution": cfg.resolution, "results": table,
            "seconds": time.time() - t0, "config": cfg.name}


def format_table(report: dict) -> str:
    lines = ["| method | frames | SSIM ↑ | PSNR ↑ | identity cos ↑ | landmark err ↓ | face found | FID ↓ |",
             "|---|---|---|---|---|---|---|---|"]
    for name, r in report["results"].items():
        lines.append(f"| {name} | {r['frames']} | {r['ssim']:.3f} | {r['psnr']:.2f} | {r['identity']:.3f} | "
                     f"{r['landmark_error']:.3f} | {r['face_found']:.0%} | {r.get('fid', float('nan')):.1f} |")
    return "\n".join(lines)


__all__ = ["evaluate", "format_table", "FrameScorer", "normalised_landmark_error"]
