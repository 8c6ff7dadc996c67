"""Warping talking-head checkpoints and their renderer.

A meta-trained run's snapshots hold G and D (kind ``facesynth-talking-warp``; an exported model holds G
alone).  A fine-tuned person (kind ``facesynth-talking-warp-person``) holds G and the person's source
frames and landmarks, since this generator reads its sources at every frame.  Both are safetensors with the
config in their metadata.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .. import checkpoints as ckpt
from ..errors import FacesynthError
from ..nets.talking_warp import PatchDiscriminator, WarpGenerator
from .config import WarpHeadConfig
from .episodes import landmark_image, to_unit
from ..nets.tps import face_local, tps_grid, warp

WARP_RUN_KIND = "facesynth-talking-warp"
WARP_PERSON_KIND = "facesynth-talking-warp-person"
WARP_KINDS = (WARP_RUN_KIND, WARP_PERSON_KIND)
MAX_SOURCES = 32


def build_warp_networks(cfg: WarpHeadConfig) -> dict[str, torch.nn.Module]:
    return {"G": WarpGenerator(cfg), "D": PatchDiscriminator(cfg)}


def motion_size(cfg) -> int:
    """The side of the motion field: half the picture's."""
    return cfg.resolution // 2


def source_grids(driving: torch.Tensor, sources: torch.Tensor, cfg) -> torch.Tensor:
    """TPS grids [B, K, h, h, 2] from driving landmarks [B, 68, 2] to each of K source landmark sets [B, K, 68, 2],
    faded out away from the face as ``cfg.tps_falloff`` says."""
    b, k = sources.shape[:2]
    r = cfg.resolution
    h = motion_size(cfg)
    drv = driving.repeat_interleave(k, 0)
    grids = tps_grid(drv, sources.reshape(b * k, 68, 2), r, h, cfg.tps_smoothing)
    if cfg.tps_falloff:
        grids = face_local(grids, drv, r, cfg.tps_falloff)
    return grids.reshape(b, k, h, h, 2)


def read_warp_checkpoint(path) -> tuple[str, WarpHeadConfig, dict[str, torch.Tensor], Path]:
    """(kind, config, tensors, model file) of a warping run, snapshot, exported model or person."""
    model_file = ckpt.resolve_checkpoint(path)
    meta, shapes = ckpt.safetensors_header(model_file)
    kind = meta.get("kind")
    if kind not in WARP_KINDS:
        raise FacesynthError(f"{model_file}: not a warping talking-head checkpoint (kind={kind!r})")
    cfg = ckpt.config_from_metadata(meta, WarpHeadConfig, model_file)
    # G compared on the meta device, so a header describing huge tensors is refused before anything is
    # read (D, spectrally normalised, is compared when it is loaded).
    ckpt.check_tensor_shapes(model_file, shapes, {"G": lambda: WarpGenerator(cfg)})
    tensors = ckpt.read_safetensors(model_file)
    if kind == WARP_PERSON_KIND:
        _check_person_tensors(tensors, cfg, model_file)
    return kind, cfg, tensors, model_file


def _check_person_tensors(tensors: dict, cfg: WarpHeadConfig, source) -> None:
    r = cfg.resolution
    frames, lms = tensors.get("sources"), tensors.get("source_landmarks")
    if (frames is None or lms is None or frames.dtype != torch.uint8 or frames.ndim != 4
            or tuple(frames.shape[1:]) != (3, r, r) or not 1 <= len(frames) <= MAX_SOURCES
            or tuple(lms.shape) != (len(frames), 68, 2)):
        raise FacesynthError(f"{source}: a warping person checkpoint needs 'sources' uint8 [K, 3, {r}, {r}] and "
                             "'source_landmarks' [K, 68, 2]")


def load_warp_generator(path, device="cpu") -> tuple[str, WarpHeadConfig, WarpGenerator, dict, Path]:
    """(kind, config, G in eval mode, all tensors, model file)."""
    kind, cfg, tensors, model_file = read_warp_checkpoint(path)
    G = WarpGenerator(cfg)
    ckpt.load_module_tensors(G, {k: v.float() if v.is_floating_point() else v for k, v in tensors.items()},
                             "G", str(model_file))
    return kind, cfg, G.to(device).eval(), tensors, model_file


class WarpTalker:
    """A warping generator and one person's K source frames: landmarks in, frames out."""

    def __init__(self, G: WarpGenerator, cfg, images: np.ndarray, landmarks: np.ndarray, device):
        """``images`` uint8 [K, R, R, 3], ``landmarks`` [K, 68, 2] in model pixels."""
        self.G, self.cfg, self.resolution, self.device = G.eval(), cfg, cfg.resolution, device
        r = cfg.resolution
        self.sources = to_unit(torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)).to(device)
        drawings = np.stack([landmark_image(lm, r, r) for lm in landmarks])
        self.source_drawings = to_unit(torch.from_numpy(drawings).permute(0, 3, 1, 2)).to(device)
        self.source_landmarks = torch.as_tensor(np.asarray(landmarks), dtype=torch.float32, device=device)
        with torch.no_grad():
            self.features = G.encode(self.sources)

    @classmethod
    def from_portraits(cls, G: WarpGenerator, cfg, portraits, device) -> "WarpTalker":
        return cls(G, cfg, np.stack([p.image for p in portraits]), np.stack([p.landmarks for p in portraits]), device)

    @torch.no_grad()
    def render(self, landmarks: np.ndarray, batch: int = 8):
        """uint8 [R, R, 3] frames for landmark sets [N, 68, 2] in model pixels."""
        r, k = self.resolution, len(self.sources)
        for start in range(0, len(landmarks), batch):
            chunk = np.asarray(landmarks[start:start + batch], np.float32)
            b = len(chunk)
            drawings = np.stack([landmark_image(lm, r, r) for lm in chunk])
            drawing = to_unit(torch.from_numpy(drawings).permute(0, 3, 1, 2)).to(self.device)
            driving = torch.from_numpy(chunk).to(self.device)
            grids = source_grids(driving, self.source_landmarks.expand(b, -1, -1, -1), self.cfg)
            feats = [f.repeat(b, 1, 1, 1) for f in self.features]
            out = self.G(self.sources.expand(b, -1, -1, -1, -1), self.source_drawings.expand(b, -1, -1, -1, -1),
                         drawing, grids, features=feats)
            yield from ((out.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


class TPSTalker:
    """No learning: the first source warped by the landmark TPS alone (the reference a model must beat), over
    the whole picture or (``falloff`` > 0) faded out away from the face."""

    def __init__(self, image: np.ndarray, landmarks: np.ndarray, resolution: int, falloff: float = 0.0):
        self.source = to_unit(torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1))[None]
        self.landmarks = torch.as_tensor(np.asarray(landmarks), dtype=torch.float32)[None]
        self.resolution, self.falloff = resolution, falloff

    @torch.no_grad()
    def render(self, landmarks: np.ndarray, batch: int = 16):
        for start in range(0, len(landmarks), batch):
            driving = torch.as_tensor(np.asarray(landmarks[start:start + batch]), dtype=torch.float32)
            grid = tps_grid(driving, self.landmarks.expand(len(driving), -1, -1), self.resolution)
            if self.falloff:
                grid = face_local(grid, driving, self.resolution, self.falloff)
            out = warp(self.source.expand(len(driving), -1, -1, -1), grid)
            yield from ((out + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def checkpoint_kind(path) -> str:
    """The kind a talking-head checkpoint's metadata names (to pick the family that reads it)."""
    model_file = ckpt.resolve_checkpoint(path)
    meta, _ = ckpt.safetensors_header(model_file)
    return str(meta.get("kind"))


__all__ = ["WARP_RUN_KIND", "WARP_PERSON_KIND", "WARP_KINDS", "build_warp_networks", "source_grids",
           "read_warp_checkpoint", "load_warp_generator", "WarpTalker", "TPSTalker", "checkpoint_kind",
           "motion_size", "heldout_of", "export_warp_model"]


def heldout_of(model_file) -> list[str]:
    """The clips kept aside from training that an exported model's metadata names ([] when none)."""
    import json

    meta, _ = ckpt.safetensors_header(ckpt.resolve_checkpoint(model_file))
    try:
        clips = json.loads(meta.get("heldout", "[]"))
    except ValueError:
        raise FacesynthError(f"{model_file}: its 'heldout' metadata is not valid JSON") from None
    if not isinstance(clips, list) or not all(isinstance(c, str) for c in clips):
        raise FacesynthError(f"{model_file}: its 'heldout' metadata must be a list of clip names")
    return clips


def export_warp_model(run, out, half: bool = True) -> Path:
    """A run's G alone (float16 by default), with its config and the clips its run kept aside in the metadata."""
    import json

    from safetensors.torch import save_file

    from ..util.atomic import atomic_path

    kind, cfg, tensors, model_file = read_warp_checkpoint(run)
    if kind != WARP_RUN_KIND:
        raise FacesynthError(f"{model_file}: a fine-tuned person, not a meta-trained run")
    state_file = model_file.parent / "state.json"
    heldout = ckpt.read_json(state_file, "training state").get("exclude", []) if state_file.is_file() else []
    g = {k: (v.half() if half and v.is_floating_point() else v).contiguous() for k, v in tensors.items()
         if k.startswith("G.")}
    meta = ckpt.model_metadata(cfg, None, WARP_RUN_KIND)
    meta["heldout"] = json.dumps(list(heldout))
    out = Path(out)
    with atomic_path(out) as tmp:
        save_file(g, str(tmp), metadata=meta)
    return out
