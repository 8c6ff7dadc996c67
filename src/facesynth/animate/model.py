"""Talking-head checkpoints: building the three networks and reading them back.

A meta-trained run's snapshots hold E, G and D (kind ``facesynth-talking-head``); a fine-tuned
person (kind ``facesynth-talking-person``) holds G, D, the person's AdaIN parameters ``psi`` and
discriminator vector ``w``.  Both are safetensors with the config in their metadata, like the GANs'.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import torch

from .. import checkpoints as ckpt
from ..errors import FacesynthError
from ..nets.talking_head import Embedder, ProjectionDiscriminator, TalkingHeadGenerator
from .config import TalkingHeadConfig

RUN_KIND = "facesynth-talking-head"
PERSON_KIND = "facesynth-talking-person"


def build_networks(cfg: TalkingHeadConfig, num_videos: int) -> dict[str, torch.nn.Module]:
    return {"E": Embedder(cfg), "G": TalkingHeadGenerator(cfg), "D": ProjectionDiscriminator(cfg, num_videos)}


def read_checkpoint(path: str | Path) -> tuple[str, TalkingHeadConfig, dict[str, torch.Tensor], Path]:
    """(kind, config, tensors, model file) of a talking-head run, snapshot or person checkpoint."""
    model_file = ckpt.resolve_checkpoint(path)
    meta, shapes = ckpt.safetensors_header(model_file)
    kind = meta.get("kind")
    if kind not in (RUN_KIND, PERSON_KIND):
        hint = " (a face GAN: use it with generate/mix/project)" if kind == ckpt.KIND else ""
        raise FacesynthError(f"{model_file}: not a talking-head checkpoint (kind={kind!r}){hint}")
    cfg = ckpt.config_from_metadata(meta, TalkingHeadConfig, model_file)
    w = shapes.get("D.W")
    num_videos = w[1][0] if w is not None and len(w[1]) == 2 else 1
    if size_bound(cfg, num_videos) > ckpt.META_CHECK_BYTES:
        # The networks the config describes must be the ones stored, before either is built or read:
        # compared on the meta device, without spectral norm (whose set-up is slow there), whose tensors
        # are the plain weight under another name plus its two power-iteration vectors.
        plain = cfg.replace(spectral_norm=False)
        ckpt.check_tensor_shapes(model_file, _without_spectral_norm(shapes) if cfg.spectral_norm else shapes,
                                 {"E": lambda: Embedder(plain), "G": lambda: TalkingHeadGenerator(plain),
                                  "D": lambda: ProjectionDiscriminator(plain, num_videos)})
    return kind, cfg, ckpt.read_safetensors(model_file), model_file


def size_bound(cfg: TalkingHeadConfig, num_videos: int) -> int:
    """A generous upper bound on the bytes of E, G and D that ``cfg`` describes."""
    c = max(cfg.max_channels, cfg.embed_dim)
    blocks = int(math.log2(cfg.resolution)) + cfg.g_down_blocks + cfg.g_res_blocks + len(cfg.attention) + 2
    params = 3 * blocks * 30 * c * c + cfg.embed_dim * blocks * 4 * c + num_videos * cfg.embed_dim
    return 4 * params


def _without_spectral_norm(shapes: dict) -> dict:
    out = {}
    for k, v in shapes.items():
        if re.search(r"\.parametrizations\.\w+\.0\._[uv]$", k):
            continue
        out[re.sub(r"\.parametrizations\.(\w+)\.original$", r".\1", k)] = v
    return out


def num_videos_of(tensors: dict[str, torch.Tensor], source: str) -> int:
    w = tensors.get("D.W")
    if w is None or w.ndim != 2:
        raise FacesynthError(f"{source}: no discriminator video matrix D.W")
    return int(w.shape[0])


def load_run(path: str | Path, device="cpu") -> tuple[TalkingHeadConfig, dict[str, torch.nn.Module], Path]:
    """E, G, D of a meta-trained checkpoint, in eval mode on ``device``."""
    kind, cfg, tensors, model_file = read_checkpoint(path)
    if kind != RUN_KIND:
        raise FacesynthError(f"{model_file}: a fine-tuned person, not a meta-trained run (needs the embedder)")
    nets = build_networks(cfg, num_videos_of(tensors, str(model_file)))
    for name, net in nets.items():
        ckpt.load_module_tensors(net, tensors, name, str(model_file))
        net.to(device).eval()
    return cfg, nets, model_file


__all__ = ["RUN_KIND", "PERSON_KIND", "build_networks", "read_checkpoint", "load_run", "num_videos_of"]
