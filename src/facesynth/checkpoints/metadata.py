"""A model file's metadata: its kind, format version, the config that rebuilds its networks, and where
progressive growing stood when it was saved."""

from __future__ import annotations

import json
from pathlib import Path

from ..config import GANConfig
from ..errors import FacesynthError

KIND = "facesynth-gan"
FORMAT_VERSION = 1


def model_metadata(cfg: GANConfig, growth: dict | None, kind: str = KIND) -> dict[str, str]:
    """The safetensors metadata of a model file: its kind, the config, and where growing stood."""
    meta = {"kind": kind, "format": str(FORMAT_VERSION), "config": json.dumps(cfg.to_dict())}
    if growth:
        meta["growth"] = json.dumps(growth)
    return meta


def config_from_metadata(meta: dict, config_class, path: Path):
    """The config a model file's metadata carries, validated as ``config_class``."""
    try:
        cfg_dict = json.loads(meta.get("config", ""))
    except (ValueError, TypeError, RecursionError):
        raise FacesynthError(f"{path}: checkpoint config is not valid JSON") from None
    return config_class.from_dict(cfg_dict, source=f"{path}: checkpoint config")


def growth_from_metadata(meta: dict, cfg: GANConfig, path: Path) -> dict:
    """The growth state in the metadata ({} for none), checked to name one of ``cfg``'s resolutions."""
    try:
        growth = json.loads(meta.get("growth", "{}"))
        if not isinstance(growth, dict):
            raise ValueError
    except (ValueError, RecursionError):
        raise FacesynthError(f"{path}: checkpoint growth state is not a JSON object") from None
    if growth:
        res, alpha = growth.get("resolution"), growth.get("alpha", 1.0)
        if type(res) is not int or res not in cfg.block_resolutions:
            raise FacesynthError(f"{path}: checkpoint growth state names resolution {str(res)[:20]!r}, "
                                 f"not one of this {cfg.resolution}x{cfg.resolution} model's")
        if type(alpha) not in (int, float) or not 0 <= alpha <= 1:
            raise FacesynthError(f"{path}: checkpoint growth state has alpha {str(alpha)[:20]!r}, "
                                 "not a number from 0 to 1")
    return growth
