"""Reenactment: a portrait (or a fine-tuned person) made to follow the landmarks of a driving video.

The driver's landmarks are retargeted to the source face by relative motion: a similarity transform
(scale, rotation, shift) maps the driver's reference frame onto the source's landmarks, and every
frame's displacement from that reference, so transformed, is added to the source's landmarks.  The
source keeps its own face shape and place in the picture; only the motion comes from the driver.
The reference is the driver frame whose landmarks best match the source's after alignment
(``best``, the default) or its first frame with a face (``first``).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from .. import checkpoints as ckpt
from ..data.video import crop_frame, head_crop, iter_frames, prepare_image, probe_video, to_crop, track_landmarks
from ..errors import FacesynthError
from ..provenance import for_animation
from ..util.video import check_video_path, upscale, write_video
from .episodes import frame_at, landmark_image, rescale_landmarks, to_unit
from .model import PERSON_KIND, RUN_KIND, build_networks, num_videos_of, read_checkpoint

PREP_RESOLUTION = 256  # portraits and drivers are cropped at this size, then reduced to the model's, like the clips
SHOW_SIZE = 256  # output videos are enlarged to at least this


@dataclass
class Portrait:
    """A source face at the model's resolution: image and landmark drawing (uint8 [R, R, 3]), landmarks [68, 2]."""

    name: str
    image: np.ndarray
    drawing: np.ndarray
    landmarks: np.ndarray


def load_portraits(paths, resolution: int, quiet: bool = False) -> list[Portrait]:
    out = []
    for p in paths:
        crop, lm, _ = prepare_image(p, PREP_RESOLUTION, quiet=quiet)
        lm = rescale_landmarks(lm, PREP_RESOLUTION, resolution)
        out.append(Portrait(Path(p).name, frame_at(crop, resolution), landmark_image(lm, resolution, resolution), lm))
    return out


def stack_portraits(portraits: list[Portrait]) -> tuple[torch.Tensor, torch.Tensor]:
    """[1, K, 3, R, R] frames and drawings in [-1, 1] for the embedder."""
    def t(xs):
        return to_unit(torch.from_numpy(np.stack(xs)).permute(0, 3, 1, 2))[None]

    return t([p.image for p in portraits]), t([p.drawing for p in portraits])


# --------------------------------------------------------------------------- landmark motion

def similarity_transform(src: np.ndarray, dst: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Least-squares scale s, rotation R and shift t with dst ~ s R src + t (Umeyama 1991)."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    a, b = src - mu_s, dst - mu_d
    u, sig, vt = np.linalg.svd(b.T @ a / len(src))
    d = np.diag([1.0, np.sign(np.linalg.det(u @ vt))])  # a rotation, never a reflection
    rot = u @ d @ vt
    scale = float(np.trace(np.diag(sig) @ d) / max(a.var(0).sum(), 1e-12))
    return scale, rot, mu_d - scale * rot @ mu_s


def reference_frame(source: np.ndarray, driver: np.ndarray, how: str = "best") -> int:
    if how == "first":
        return 0
    if how != "best":
        raise FacesynthError(f"unknown reference {how!r} (best or first)")
    errors = []
    for lm in driver:
        s, r, t = similarity_transform(lm, source)
        errors.append(np.linalg.norm(s * lm @ r.T + t - source, axis=1).mean())
    return int(np.argmin(errors))


def retarget(source: np.ndarray, driver: np.ndarray, reference: int = 0) -> np.ndarray:
    """Driver landmarks [N, 68, 2] -> the source's face moving as the driver's does, relative to ``reference``."""
    ref = driver[reference]
    scale, rot, _ = similarity_transform(ref, source)
    return source[None] + scale * (driver - ref[None]) @ rot.T


def fill_missing(landmarks: list[np.ndarray | None]) -> tuple[np.ndarray, list[int]]:
    """Frames without a face get landmarks interpolated from their neighbours (held at the ends)."""
    have = [i for i, lm in enumerate(landmarks) if lm is not None]
    if not have:
        raise FacesynthError("no face found in any frame of the driving video")
    missing = [i for i, lm in enumerate(landmarks) if lm is None]
    known = np.stack([landmarks[i] for i in have]).reshape(len(have), -1)
    idx = np.arange(len(landmarks))
    filled = np.stack([np.interp(idx, have, known[:, j]) for j in range(known.shape[1])], 1)
    return filled.reshape(len(landmarks), 68, 2), missing


@dataclass
class Driver:
    landmarks: np.ndarray  # [N, 68, 2] in pixels of the driver's crop at the model's resolution
    missing: list[int]
    fps: float
    crop: tuple[int, int, int]
    path: Path

    def frames(self, resolution: int):
        """The driver's cropped frames (decoded again: a long video never sits in memory)."""
        for frame in iter_frames(self.path, len(self.landmarks)):
            yield frame_at(crop_frame(frame, self.crop, PREP_RESOLUTION), resolution)


def track_driver(path, resolution: int, max_frames: int | None = None, quiet: bool = False) -> Driver:
    path = Path(path)
    info = probe_video(path)
    raw = track_landmarks(path, max_frames=max_frames, quiet=quiet)
    filled, missing = fill_missing(raw)
    crop = head_crop([lm for lm in raw if lm is not None])
    lms = rescale_landmarks(to_crop(filled.reshape(-1, 2), crop, PREP_RESOLUTION).reshape(-1, 68, 2),
                            PREP_RESOLUTION, resolution)
    if missing and not quiet:
        print(f"{path}: no face in {len(missing)} of {len(raw)} frames; their landmarks are interpolated",
              file=sys.stderr)
    return Driver(lms, missing, info.fps, crop, path)


# --------------------------------------------------------------------------- the talking head

class Talker:
    """A generator and the AdaIN parameters of one person: landmarks in, frames out."""

    def __init__(self, G, psi: torch.Tensor, resolution: int, device):
        self.G, self.psi, self.resolution, self.device = G.eval(), psi.to(device), resolution, device

    @torch.no_grad()
    def render(self, landmarks: np.ndarray, batch: int = 16):
        """uint8 [R, R, 3] frames for landmark sets [N, 68, 2] in model pixels."""
        r = self.resolution
        for start in range(0, len(landmarks), batch):
            drawings = np.stack([landmark_image(lm, r, r) for lm in landmarks[start:start + batch]])
            x = to_unit(torch.from_numpy(drawings).permute(0, 3, 1, 2)).to(self.device)
            out = self.G(x, self.psi.expand(len(x), -1))
            yield from ((out.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def talking_checkpoint(path) -> Path:
    """``path``, or the talking-head model bundled with facesynth when it is None."""
    if path is not None:
        return Path(path)
    from ..models import default_talking_model

    found = default_talking_model()
    if found is None:
        raise FacesynthError("no talking-head model is bundled with this installation: give --ckpt")
    return found


def talking_config(path):
    """The config of a talking-head checkpoint of either family (read from its header alone)."""
    from .config import TalkingHeadConfig, WarpHeadConfig
    from .warp_model import WARP_KINDS

    model_file = ckpt.resolve_checkpoint(path)
    meta, _ = ckpt.safetensors_header(model_file)
    if meta.get("kind") in WARP_KINDS:
        return ckpt.config_from_metadata(meta, WarpHeadConfig, model_file)
    return read_checkpoint(model_file)[1]


def load_warp_talker(path, portraits: list[Portrait] | None, device="cpu"):
    """A warping run animates ``portraits``; a warping person animates its own photos (or ``portraits``)."""
    from .warp_finetune import person_portraits
    from .warp_model import WARP_PERSON_KIND, WarpTalker, load_warp_generator

    kind, cfg, G, tensors, model_file = load_warp_generator(path, device)
    if kind == WARP_PERSON_KIND and not portraits:
        portraits = person_portraits(tensors)
    if not portraits:
        raise FacesynthError(f"{model_file}: a meta-trained run needs --source images to animate")
    talker = WarpTalker.from_portraits(G, cfg, portraits, device)
    return talker, {"kind": kind, "config": cfg, "model_file": model_file, "portraits": portraits}


def load_talker(path, portraits: list[Portrait] | None, device="cpu") -> tuple[Talker, dict]:
    """A meta-trained run embeds ``portraits`` (feed-forward, no fine-tuning); a person checkpoint is used as is."""
    from .warp_model import WARP_KINDS, checkpoint_kind

    if checkpoint_kind(path) in WARP_KINDS:
        return load_warp_talker(path, portraits, device)
    kind, cfg, tensors, model_file = read_checkpoint(path)
    nets = build_networks(cfg, num_videos_of(tensors, str(model_file)) if "D.W" in tensors else 1)
    G = nets["G"]
    ckpt.load_module_tensors(G, tensors, "G", str(model_file))
    G.to(device)
    if kind == PERSON_KIND:
        psi = tensors.get("psi")
        if psi is None or psi.shape != (1, G.psi_dim):
            raise FacesynthError(f"{model_file}: person checkpoint without a valid psi")
    else:
        assert kind == RUN_KIND
        if not portraits:
            raise FacesynthError(f"{model_file}: a meta-trained run needs --source images to animate")
        E = nets["E"]
        ckpt.load_module_tensors(E, tensors, "E", str(model_file))
        E.to(device).eval()
        frames, drawings = stack_portraits(portraits)
        with torch.no_grad():
            psi = G.psi(E(frames.to(device), drawings.to(device)))
    return Talker(G, psi, cfg.resolution, device), {"kind": kind, "config": cfg, "model_file": model_file}


def reenact(ckpt_path, driver: str, out: str, sources=(), self_mode: bool = False, reference: str = "best",
            side_by_side: bool = False, max_frames: int | None = None, device="cpu", quiet: bool = False,
            render_batch: int = 8) -> dict:
    """Animate ``sources`` (or a fine-tuned person) with ``driver``'s motion; writes ``out`` (.mp4/.gif)."""
    out = check_video_path(out)
    ckpt_path = talking_checkpoint(ckpt_path)
    cfg = talking_config(ckpt_path)
    res = cfg.resolution
    portraits = load_portraits(sources, res, quiet=quiet) if sources else []
    t0 = time.time()
    drv = track_driver(driver, res, max_frames=max_frames, quiet=quiet)
    if self_mode and not portraits:  # the clip's own first frame is the source
        first = next(drv.frames(res))
        portraits = [Portrait("first frame", first, landmark_image(drv.landmarks[0], res, res), drv.landmarks[0])]
    talker, info = load_talker(ckpt_path, portraits, device)
    portraits = portraits or info.get("portraits") or []
    if self_mode:
        motion, ref = drv.landmarks, None
    else:
        if not portraits:
            raise FacesynthError("retargeting needs the source's landmarks: give --source images")
        src = portraits[0].landmarks
        ref = reference_frame(src, drv.landmarks, reference)
        motion = retarget(src, drv.landmarks, ref)
    t_track = time.time() - t0
    factor = max(1, -(-SHOW_SIZE // res))
    t1 = time.time()
    generated = talker.render(motion, batch=render_batch)
    bar = tqdm(total=len(motion), desc="reenact", unit="frame", disable=quiet, file=sys.stderr)

    def frames():
        drv_frames = drv.frames(res) if side_by_side else None
        for i, img in enumerate(generated):
            bar.update()
            if drv_frames is not None:  # source | driver | the landmarks drawn | output
                panels = [portraits[0].image] if portraits and not self_mode else []
                img = np.concatenate(panels + [next(drv_frames), landmark_image(motion[i], res, res), img], axis=1)
            yield upscale(img, factor)

    count = write_video(frames(), out, fps=drv.fps, mark=for_animation(info["model_file"], sources, driver))
    bar.close()
    t_render = time.time() - t1
    report = {"frames": count, "fps_video": drv.fps, "resolution": res, "kind": info["kind"],
              "missing_driver_frames": drv.missing, "reference_frame": ref, "self": self_mode,
              "tracking_s": t_track, "render_s": t_render, "render_fps": count / max(t_render, 1e-9),
              "out": str(out)}
    return report


__all__ = ["Portrait", "load_portraits", "retarget", "similarity_transform", "reference_frame", "fill_missing",
           "track_driver", "Talker", "load_talker", "reenact", "talking_checkpoint", "talking_config"]
