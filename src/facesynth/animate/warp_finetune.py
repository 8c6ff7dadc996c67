"""Few-shot fine-tuning of the warping talking head on one person's 1 to 32 photos.

The generator is adapted to reproduce the person: each step takes one photo as source and one (the same
or another) as target, and moves the source by a small random similarity transform (image and landmarks
together), so the network has to carry the face back to the target's landmarks, as it will when driven.
Pixel L1 + (1 - SSIM) and, where the model was trained with it, the identity term, as in meta-learning.
The result, a person checkpoint, holds the adapted G and the photos (this generator reads its sources at
every frame).
"""

from __future__ import annotations

import copy
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from .. import checkpoints as ckpt
from ..errors import FacesynthError
from ..training.optim import adam
from ..util.atomic import atomic_path, write_json_atomic
from .episodes import landmark_image, to_unit
from .identity_loss import identity_network
from .reenact import Portrait, load_portraits
from ..nets.tps import identity_grid, to_grid_units, warp
from .warp_model import MAX_SOURCES, WARP_PERSON_KIND, load_warp_generator, source_grids
from .warp_train import reconstruction_losses, weighted

JITTER = {"angle": 0.10, "scale": 0.06, "shift": 0.06}  # radians, fraction, grid units


def jittered(images: torch.Tensor, landmarks: torch.Tensor, generator: torch.Generator, cfg=None
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Images [B, 3, R, R] and their landmarks [B, 68, 2] (pixels) moved by one random similarity each.

    With a ``cfg`` whose motion fades out away from the face (``tps_falloff``), only the face moves, by the
    same face-local spline the model's motion is built from: the background stays where the model will leave
    it when the person is driven, instead of a global shift it cannot undo (and learns to fake)."""
    b, r = images.shape[0], images.shape[-1]
    u = torch.rand(b, 4, generator=generator) * 2 - 1
    angle, scale = u[:, 0] * JITTER["angle"], 1 + u[:, 1] * JITTER["scale"]
    shift = u[:, 2:] * JITTER["shift"]
    cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
    fwd = torch.stack([torch.stack([cos, -sin], 1), torch.stack([sin, cos], 1)], 1)  # [B, 2, 2], points out
    pts = to_grid_units(landmarks, r) @ fwd.transpose(1, 2) + shift[:, None]
    moved_landmarks = (pts + 1) * (r / 2) - 0.5
    if cfg is not None and cfg.tps_falloff:
        return warp(images, source_grids(moved_landmarks, landmarks[:, None], cfg)[:, 0]), moved_landmarks
    # Output pixel p reads input at inv (p - shift): the landmarks move forward, fwd q + shift.
    grid = (identity_grid(r).reshape(1, -1, 2) - shift[:, None]) @ torch.linalg.inv(fwd).transpose(1, 2)
    moved = F.grid_sample(images, grid.reshape(b, r, r, 2), padding_mode="border", align_corners=False)
    return moved, moved_landmarks


def finetune_warp(G, cfg, portraits: list[Portrait], steps: int | None = None, lr: float | None = None,
                  batch: int = 4, seed: int = 0, device="cpu", quiet: bool = False) -> tuple[torch.nn.Module, dict]:
    """A copy of ``G`` adapted to ``portraits``; (G in eval mode, info)."""
    if not 1 <= len(portraits) <= MAX_SOURCES:
        raise FacesynthError(f"fine-tuning takes 1 to {MAX_SOURCES} images of one person, got {len(portraits)}")
    steps = cfg.finetune_steps if steps is None else steps
    lr = cfg.finetune_lr if lr is None else lr
    r = cfg.resolution
    G = copy.deepcopy(G).train().requires_grad_(True)
    images = to_unit(torch.from_numpy(np.stack([p.image for p in portraits])).permute(0, 3, 1, 2)).to(device)
    landmarks = torch.as_tensor(np.stack([p.landmarks for p in portraits]), dtype=torch.float32, device=device)
    g = torch.Generator().manual_seed(seed)
    opt = adam(G.parameters(), lr=lr, betas=tuple(cfg.betas))
    identity = identity_network(cfg, device)
    t0, last = time.time(), {}
    for step in tqdm(range(steps), desc="fine-tune", unit="step", disable=quiet, file=sys.stderr):
        src_i = torch.randint(len(portraits), (batch,), generator=g)
        tgt_i = torch.randint(len(portraits), (batch,), generator=g)
        src, src_lm = jittered(images[src_i].cpu(), landmarks[src_i].cpu(), g, cfg)
        src, src_lm = src.to(device), src_lm.to(device)
        target, target_lm = images[tgt_i], landmarks[tgt_i]
        drawings = _drawings(src_lm, r, device)
        target_drawing = _drawings(target_lm, r, device)
        grids = source_grids(target_lm, src_lm[:, None], cfg)
        fake = G(src[:, None], drawings[:, None], target_drawing, grids)
        losses = reconstruction_losses(cfg, fake, target, identity=identity, target_landmarks=target_lm)
        loss = weighted(cfg, losses)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        last = {"step": step + 1, "loss": float(loss.detach()), "l1": float(losses["pixel"].detach()),
                **({"identity": float(losses["identity"].detach())} if "identity" in losses else {})}
    return G.eval(), {"steps": steps, "lr": lr, "images": [p.name for p in portraits],
                      "seconds": time.time() - t0, "log": [last] if last else []}


def _drawings(landmarks: torch.Tensor, resolution: int, device) -> torch.Tensor:
    drawn = np.stack([landmark_image(lm, resolution, resolution) for lm in landmarks.detach().cpu().numpy()])
    return to_unit(torch.from_numpy(drawn).permute(0, 3, 1, 2)).to(device)


def save_warp_person(G, cfg, portraits: list[Portrait], info: dict, out: str | Path) -> Path:
    """OUT/model.safetensors (G, the source photos and landmarks; config in the metadata) and OUT/person.json."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {**ckpt.module_tensors("G", G),
               "sources": torch.from_numpy(np.stack([p.image for p in portraits])).permute(0, 3, 1, 2).contiguous(),
               "source_landmarks": torch.as_tensor(np.stack([p.landmarks for p in portraits]),
                                                   dtype=torch.float32).contiguous()}
    from safetensors.torch import save_file

    with atomic_path(out / ckpt.MODEL_FILE) as tmp:
        save_file(tensors, str(tmp), metadata=ckpt.model_metadata(cfg, None, WARP_PERSON_KIND))
    write_json_atomic(out / "person.json", json.loads(json.dumps(info, default=str)))
    return out / ckpt.MODEL_FILE


def finetune_warp_person(run, images: list[str], out: str, steps: int | None = None, lr: float | None = None,
                         device="cpu", seed: int = 0, quiet: bool = False) -> dict:
    """``animate finetune`` for a warping model: align the photos, fine-tune, save the person checkpoint."""
    _, cfg, G, _, model_file = load_warp_generator(run, device)
    portraits = load_portraits(images, cfg.resolution, quiet=quiet)
    G, info = finetune_warp(G, cfg, portraits, steps, lr, seed=seed, device=device, quiet=quiet)
    info["run"] = str(model_file)
    path = save_warp_person(G, cfg, portraits, info, out)
    return {**info, "model": str(path)}


def person_portraits(tensors: dict) -> list[Portrait]:
    """The source photos a warping person checkpoint carries."""
    frames = tensors["sources"].permute(0, 2, 3, 1).numpy()
    lms = tensors["source_landmarks"].float().numpy()
    r = frames.shape[1]
    return [Portrait(f"source {i}", frames[i], landmark_image(lms[i], r, r), lms[i]) for i in range(len(frames))]


__all__ = ["finetune_warp", "save_warp_person", "finetune_warp_person", "person_portraits", "jittered"]
