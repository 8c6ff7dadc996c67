"""Named model-and-training configurations.

A preset fixes the architecture (resolution x capacity) and the training
hyper-parameters that go with it.  Every snapshot stores the full config so a
checkpoint always rebuilds its own networks, whatever the presets become later.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .config import GANConfig
from .errors import FacesynthError

MAX_CONFIG_BYTES = 2**20  # a config file larger than this is refused unread

PRESETS: dict[str, GANConfig] = {}


def _register(cfg: GANConfig) -> GANConfig:
    PRESETS[cfg.name] = cfg.validate(f"preset {cfg.name}")
    return cfg


_register(GANConfig(
    name="tiny", resolution=16, channel_base=256, channel_max=32, z_dim=32, w_dim=32, mapping_layers=2,
    batch=8, ema_kimg=0.05, snapshot_kimg=0.1, mbstd_group=4,
    description="16x16, ~30k parameters: a training step in milliseconds, for tests and smoke runs.",
))
_register(GANConfig(
    name="stylegan2-32-cpu", resolution=32, channel_base=2048, channel_max=256, z_dim=256, w_dim=256,
    mapping_layers=4, batch=32, r1_gamma=0.01, ema_kimg=5.0, snapshot_kimg=5.0,
    description="32x32, G ~3M parameters: faces emerge within an hour on 2 CPU cores.",
))
_register(GANConfig(
    name="stylegan2-64-cpu", resolution=64, channel_base=4096, channel_max=512,
    channel_overrides={"32": 64, "64": 32}, z_dim=512, w_dim=512, mapping_layers=8, batch=32,
    r1_gamma=0.05, ema_kimg=5.0, snapshot_kimg=5.0,
    description="64x64, G ~13M parameters, capacity at 4-16 px and thin 32-64 px layers: fast on a CPU.",
))
_register(GANConfig(
    name="stylegan2-64-lite", resolution=64, channel_base=2048, channel_max=256, z_dim=256, w_dim=256,
    mapping_layers=4, batch=32, r1_gamma=0.025, ema_kimg=5.0, snapshot_kimg=2.0,
    progressive=True, start_resolution=32, fade_kimg=4.0, stable_kimg=2.0,
    description="64x64, G ~3M parameters: stylegan2-32-cpu plus a thin 64x64 block, grown from a trained "
                "32x32 run with --init-from (the model that ships with facesynth).",
))
_register(GANConfig(
    name="projected-64-cpu", resolution=64, channel_base=2048, channel_max=256, z_dim=256, w_dim=256,
    mapping_layers=4, batch=32, discriminator="projected", loss="hinge", diffaugment="color,translation,cutout",
    r1_gamma=0.0, g_lr=0.0025, d_lr=0.002, ema_kimg=5.0, snapshot_kimg=2.0,
    description="64x64, G ~3M parameters (stylegan2-64-lite's) against a projected discriminator on frozen "
                "EfficientNet-Lite0 features, hinge loss and DiffAugment (Sauer et al. 2021).",
))
_register(GANConfig(
    name="stylegan2-64-paper", resolution=64, channel_base=16384, channel_max=512, batch=64,
    r1_gamma=0.05, ema_kimg=10.0, snapshot_kimg=200.0,
    description="64x64 at the StyleGAN2-ADA 'paper' capacity; for GPUs.",
))
_register(GANConfig(
    name="stylegan2-128-paper", resolution=128, channel_base=16384, channel_max=512, batch=64,
    r1_gamma=0.1, ema_kimg=10.0, snapshot_kimg=200.0,
    description="128x128 at 'paper' capacity; for GPUs.",
))
_register(GANConfig(
    name="stylegan2-256-paper", resolution=256, channel_base=16384, channel_max=512, batch=64,
    r1_gamma=1.0, ema_kimg=20.0, snapshot_kimg=200.0,
    description="256x256 at StyleGAN2-ADA's 'paper256' capacity (G ~24M); for GPUs.",
))
_register(GANConfig(
    name="stylegan2-1024-paper", resolution=1024, channel_base=32768, channel_max=512, batch=32,
    r1_gamma=10.0, pl_weight=2.0, ema_kimg=10.0, snapshot_kimg=200.0,
    description="1024x1024 StyleGAN2 config F (FFHQ); for multi-GPU machines.",
))

# ProGAN and StyleGAN (v1), grown progressively from 4x4.  CPU presets: 256 channels at 4-8 px, then
# 128, 64, 32 (512-channel layers cost as much at 4-8 px as the whole 64x64 top does), 3 kimg per
# phase: 64x64 is reached after 27 kimg (under an hour on 2 cores) and trained at until --kimg.
# Batch 16 gives each short phase enough steps (~190 per phase) to learn in.
_CPU_64 = dict(resolution=64, channel_base=4096, channel_max=256, channel_overrides={"16": 128, "32": 64, "64": 32},
               progressive=True, start_resolution=4, fade_kimg=3.0, stable_kimg=3.0, batch=16,
               g_lr=0.002, d_lr=0.002, ema_kimg=5.0, snapshot_kimg=3.0)
# The papers' schedules: 600k images per phase; ProGAN batch 16 up to 128x128 and fewer above it
# (CelebA-HQ); StyleGAN from 8x8 with its per-resolution batch and learning-rate tables (FFHQ, 8 GPUs).
_PROGAN_PAPER = dict(arch="progan", loss="wgan-gp", z_dim=512, w_dim=512, mapping_layers=0, g_lr=0.001,
                     d_lr=0.001, style_mixing_prob=0.0, r1_gamma=0.0, ema_kimg=10.0, snapshot_kimg=100.0,
                     channel_base=16384, channel_max=512, progressive=True, fade_kimg=600.0, stable_kimg=600.0,
                     batch=16, batch_per_res={"256": 14, "512": 6, "1024": 3})
_STYLEGAN1_PAPER = dict(arch="stylegan1", z_dim=512, w_dim=512, mapping_layers=8, g_lr=0.001, d_lr=0.001,
                        r1_gamma=10.0, r1_interval=1, ema_kimg=10.0, snapshot_kimg=100.0, channel_base=16384,
                        channel_max=512, progressive=True, start_resolution=8, fade_kimg=600.0,
                        stable_kimg=600.0, batch=32,
                        batch_per_res={"8": 256, "16": 128, "32": 64, "64": 32, "128": 16, "256": 8, "512": 4,
                                       "1024": 4},
                        lr_per_res={"128": 0.0015, "256": 0.002, "512": 0.003, "1024": 0.003})


def _paper(base: dict, resolution: int, **changes) -> dict:
    """A paper configuration at one resolution: its per-resolution tables cut to the model's resolutions."""
    cfg = {**base, **changes, "resolution": resolution}
    for key in ("batch_per_res", "lr_per_res"):
        cfg[key] = {k: v for k, v in cfg.get(key, {}).items() if int(k) <= resolution}
    return cfg


_register(GANConfig(
    name="progan-64", arch="progan", loss="wgan-gp", z_dim=512, w_dim=512, mapping_layers=0,
    style_mixing_prob=0.0, r1_gamma=0.0, **_CPU_64,
    description="ProGAN grown 4->64: pixel norm, WGAN-GP + drift; CPU-sized.",
))
_register(GANConfig(
    name="stylegan1-64", arch="stylegan1", z_dim=512, w_dim=512, mapping_layers=8, r1_gamma=1.0, **_CPU_64,
    description="StyleGAN v1 grown 4->64: AdaIN, noise, const input, mixing reg, R1; CPU-sized.",
))
_register(GANConfig(
    name="progan-32-paper", **_paper(_PROGAN_PAPER, 32),
    description="ProGAN at the paper's capacity (512 channels) up to 32x32: G 20.7M.",
))
_register(GANConfig(
    name="progan-256-paper", **_paper(_PROGAN_PAPER, 256),
    description="ProGAN 256x256 at the paper's capacity and schedule; for GPUs.",
))
_register(GANConfig(
    name="progan-1024-paper", **_paper(_PROGAN_PAPER, 1024),
    description="ProGAN CelebA-HQ 1024x1024 (G 23M) with the paper's schedule; for multi-GPU machines.",
))
_register(GANConfig(
    name="stylegan1-256-paper", **_paper(_STYLEGAN1_PAPER, 256),
    description="StyleGAN v1 256x256 at the paper's capacity and schedule; for GPUs.",
))
_register(GANConfig(
    name="stylegan1-1024-paper", **_paper(_STYLEGAN1_PAPER, 1024),
    description="StyleGAN v1 FFHQ 1024x1024 (G 26.2M) with the paper's schedule; for multi-GPU machines.",
))


def get_preset(name: str) -> GANConfig:
    """A named preset, or the GANConfig in a JSON file when ``name`` ends in .json."""
    if str(name).lower().endswith(".json"):
        return load_config_file(name)
    try:
        return PRESETS[name]
    except KeyError:
        raise FacesynthError(f"unknown preset {name!r}; known presets: {', '.join(PRESETS)} "
                             "(or the path of a config .json file)") from None


def load_config_file(path: str | os.PathLike) -> GANConfig:
    """A GANConfig from a JSON object of its fields; fields left out keep their defaults, ``name`` the file's stem.

    Write one with ``facesynth presets --json`` (every preset's full config) and edit it.
    """
    path = Path(path)
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise FacesynthError(f"{path}: {path.stat().st_size} bytes is far too large for a config file")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FacesynthError(f"{path}: no such config file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise FacesynthError(f"{path}: cannot read the config file ({getattr(e, 'strerror', None) or e})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise FacesynthError(f"{path}: not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})") from None
    except RecursionError:
        raise FacesynthError(f"{path}: not valid JSON (nested too deeply)") from None
    if isinstance(data, dict) and "name" not in data:
        data = {**data, "name": path.stem}
    return GANConfig.from_dict(data, source=str(path))


__all__ = ["PRESETS", "get_preset", "load_config_file"]
