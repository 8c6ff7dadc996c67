"""K-shot self-reenactment on held-out clips, next to the trivial baseline.

Per clip: K source frames spread over the clip's first half give the person (embedded, and optionally
fine-tuned); targets are frames spread over its second half, never seen as sources.  Each target is
generated from its own landmarks and compared with the true frame: SSIM, PSNR, identity cosine
(dlib's 128-D descriptors), and the landmark error of the output (dlib's 68 points found again in the
generated frame, mean distance over the inter-ocular distance, outer eye corners).  The baseline
answers every target with the first source frame: a model worth having must beat it; the ``tps`` row
warps that frame by the landmarks' thin-plate spline alone (no learning; ``tps-face``: its motion kept
to the face's surroundings).  Temporal stability: over a run
of consecutive frames of each clip's second half, the mean change of the output from one frame to the
next over the true frames' (1 = as steady as the real video; the repeated frame scores 0).  FID between
all generated and all true target frames is added when there are at least ``fid_min`` of them.
Both model families are measured the same way: Zakharov et al.'s (embedder + AdaIN generator) and the
warping one.
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
from .warp_model import WARP_KINDS, TPSTalker, WarpTalker, checkpoint_kind, load_warp_generator

UPSCALE_FOR_LANDMARKS = 256  # dlib needs faces larger than 64 px
TPS_FACE_FALLOFF = 1.6  # the tps-face row: the spline's motion faded out beyond 1.6 face radii


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
        self._truth, self._references = None, None  # every method is scored against the same true frames

    def landmarks(self, image: np.ndarray) -> np.ndarray | None:
        from PIL import Image

        r = image.shape[0]
        f = max(1, UPSCALE_FOR_LANDMARKS // r)
        big = np.asarray(Image.fromarray(image).resize((r * f, r * f), Image.LANCZOS))
        faces = self.detector.faces(big)
        return None if not faces else (faces[0].landmarks + 0.5) / f - 0.5

    def score(self, generated: np.ndarray, truth: np.ndarray, truth_landmarks: np.ndarray) -> dict:
        from ..metrics.identity import describe_all, identity_similarity

        g = to_unit(torch.from_numpy(generated).permute(0, 3, 1, 2))
        t = to_unit(torch.from_numpy(truth).permute(0, 3, 1, 2))
        if self._truth is not truth:
            self._truth, self._references = truth, describe_all(self.describer, t)
        ident = identity_similarity(self.describer, g, t, self._references)
        rows = []
        for i in range(len(g)):
            found = self.landmarks(generated[i])
            rows.append({"ssim": float(ssim(g[i:i + 1], t[i:i + 1])[0]), "psnr": float(psnr(g[i:i + 1], t[i:i + 1])[0]),
                         "identity": ident[i]["cosine"], "face_found": found is not None,
                         "landmark_error": float("nan") if found is None else
                         normalised_landmark_error(found, truth_landmarks[i])})
        return rows


def _tagged(rows: list[dict], clip: str) -> list[dict]:
    return [dict(r, clip=clip) for r in rows]


def _summary(rows: list[dict]) -> dict:
    def mean(key):
        vals = [r[key] for r in rows if r[key] == r[key]]
        return float(np.mean(vals)) if vals else float("nan")

    return {"frames": len(rows), "ssim": mean("ssim"), "psnr": mean("psnr"), "identity": mean("identity"),
            "landmark_error": mean("landmark_error"),
            "face_found": float(np.mean([r["face_found"] for r in rows])) if rows else float("nan")}


class SeedFamily:
    """Zakharov et al.'s model: the K frames embedded (or fine-tuned on), the generator driven by landmarks."""

    def __init__(self, ckpt, device):
        self.run = load_run(ckpt, device)
        self.cfg, self.nets, self.model_file = self.run
        self.device = device

    def talker(self, portraits: list[Portrait], finetune_steps: int = 0):
        if finetune_steps:
            person, _ = finetune_person(self.run, portraits, steps=finetune_steps, device=self.device, quiet=True)
            return Talker(person["G"], person["psi"], self.cfg.resolution, self.device)
        frames, drawings = stack_portraits(portraits)
        with torch.no_grad():
            psi = self.nets["G"].psi(self.nets["E"](frames.to(self.device), drawings.to(self.device)))
        return Talker(self.nets["G"], psi, self.cfg.resolution, self.device)


class WarpFamily:
    """The warping model: the K frames are its sources (fine-tuning adapts the generator to them)."""

    def __init__(self, ckpt, device):
        from .warp_model import heldout_of

        _, self.cfg, self.G, tensors, self.model_file = load_warp_generator(ckpt, device)
        self.heldout = heldout_of(self.model_file)
        self.device = device

    def talker(self, portraits: list[Portrait], finetune_steps: int = 0):
        from .warp_finetune import finetune_warp

        G = self.G
        if finetune_steps:
            G, _ = finetune_warp(self.G, self.cfg, portraits, steps=finetune_steps, device=self.device, quiet=True)
        return WarpTalker.from_portraits(G, self.cfg, portraits, self.device)


def load_family(ckpt, device):
    return WarpFamily(ckpt, device) if checkpoint_kind(ckpt) in WARP_KINDS else SeedFamily(ckpt, device)


def heldout_clips_of(family) -> list[str]:
    """The clips a model's run kept aside: its state.json, or (an exported warping model) its metadata."""
    from .. import checkpoints as ck

    state_file = family.model_file.parent / "state.json"
    clips = (list(ck.read_json(state_file, "training state").get("exclude", [])) if state_file.is_file()
             else list(getattr(family, "heldout", [])))
    if not clips:
        raise FacesynthError(f"{family.model_file}: the run kept no clips aside; name the clips to evaluate with "
                             "--clips")
    return clips


def frame_change(frames: np.ndarray) -> float:
    """Mean absolute change (0-255 levels) from each frame to the next of [N, R, R, 3] uint8 frames."""
    f = frames.astype(np.float32)
    return float(np.abs(np.diff(f, axis=0)).mean()) if len(f) > 1 else float("nan")


def evaluate(ckpt: str, data: str, clips: list[str] | None = None, shots=(1, 8), targets: int = 32,
             finetune_steps: int = 0, fid_min: int = 200, device="cpu", quiet: bool = False,
             run_frames: int = 48) -> dict:
    """Metrics per K (and for the baseline and the plain TPS warp); ``clips`` default to those the run kept
    aside.  ``run_frames`` consecutive frames per clip measure temporal stability (1-shot)."""
    family = load_family(ckpt, device)
    cfg, model_file = family.cfg, family.model_file
    if clips is None:
        clips = heldout_clips_of(family)
    videos = load_videos(data, cfg.resolution, include=clips, quiet=quiet)
    scorer = FrameScorer()
    results: dict[str, dict] = {}
    generated_all: dict[str, list[np.ndarray]] = {}
    truth_all: list[np.ndarray] = []
    changes: dict[str, list[float]] = {}
    t0 = time.time()
    tag = " fine-tuned" if finetune_steps else ""
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
            talkers = {f"{k}-shot{tag}": family.talker(portraits, finetune_steps)}
            if k == shots[0]:
                talkers["tps"] = TPSTalker(portraits[0].image, portraits[0].landmarks, cfg.resolution)
                talkers["tps-face"] = TPSTalker(portraits[0].image, portraits[0].landmarks, cfg.resolution,
                                                TPS_FACE_FALLOFF)
                base = np.repeat(v.frames[src[:1]].permute(0, 2, 3, 1).numpy(), len(tgt), axis=0)
                generated_all.setdefault("baseline", []).append(base)
                results.setdefault("baseline", []).extend(_tagged(scorer.score(base, truth, lms), v.name))
                changes.setdefault("baseline", []).append(0.0)
            for name, talker in talkers.items():
                gen = np.stack(list(talker.render(lms)))
                generated_all.setdefault(name, []).append(gen)
                results.setdefault(name, []).extend(_tagged(scorer.score(gen, truth, lms), v.name))
                if k == shots[0]:  # steadiness over consecutive frames, against the real video's
                    run = np.arange(half, min(n, half + run_frames))
                    real = frame_change(v.frames[run].permute(0, 2, 3, 1).numpy())
                    changes.setdefault(name, []).append(
                        frame_change(np.stack(list(talker.render(v.landmarks[run])))) / max(real, 1e-6))
    table = {name: _summary(rows) for name, rows in results.items()}
    per_clip = {v.name: {name: _summary([r for r in rows if r["clip"] == v.name]) for name, rows in results.items()}
                for v in videos}
    for name, ratios in changes.items():
        table[name]["frame_change"] = float(np.mean(ratios))
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
            "finetune_steps": finetune_steps, "resolution": cfg.resolution, "results": table, "per_clip": per_clip,
            "seconds": time.time() - t0, "config": cfg.name}


def format_table(report: dict) -> str:
    lines = ["| method | frames | SSIM ↑ | PSNR ↑ | identity cos ↑ | landmark err ↓ | face found | FID ↓ | "
             "frame change (× real) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, r in report["results"].items():
        lines.append(f"| {name} | {r['frames']} | {r['ssim']:.3f} | {r['psnr']:.2f} | {r['identity']:.3f} | "
                     f"{r['landmark_error']:.3f} | {r['face_found']:.0%} | {r.get('fid', float('nan')):.1f} | "
                     f"{r.get('frame_change', float('nan')):.2f} |")
    return "\n".join(lines)


def format_per_clip(report: dict) -> str:
    """SSIM and identity of every method on every clip: where a method wins or loses, not only on average."""
    names = list(report["results"])
    lines = ["| clip | " + " | ".join(f"{n} SSIM / identity" for n in names) + " |", "|---" * (1 + len(names)) + "|"]
    for clip, rows in report["per_clip"].items():
        lines.append(f"| {clip} | " + " | ".join(f"{rows[n]['ssim']:.3f} / {rows[n]['identity']:.4f}"
                                                for n in names) + " |")
    return "\n".join(lines)


__all__ = ["evaluate", "format_table", "format_per_clip", "FrameScorer", "normalised_landmark_error", "frame_change",
           "load_family", "SeedFamily", "WarpFamily"]
