"""The models that ship with facesynth: every face command's --ckpt defaults to the face model, and
``animate run`` and the web page's animation to the talking head.

See MODEL_CARD.md (the face model) and TALKING_MODEL_CARD.md beside this file for their data, licences,
training and known flaws.
"""

from __future__ import annotations

from pathlib import Path

DEFAULT_MODEL = Path(__file__).with_name("utkface-64.safetensors")
MODEL_CARD = Path(__file__).with_name("MODEL_CARD.md")
DEFAULT_TALKING_MODEL = Path(__file__).with_name("talking-warp-128.safetensors")
TALKING_MODEL_CARD = Path(__file__).with_name("TALKING_MODEL_CARD.md")


def default_model() -> Path | None:
    """The bundled model's path, or None when this installation has none (a trimmed copy)."""
    return DEFAULT_MODEL if DEFAULT_MODEL.is_file() else None


def default_talking_model() -> Path | None:
    """The bundled talking-head model's path, or None when this installation has none."""
    return DEFAULT_TALKING_MODEL if DEFAULT_TALKING_MODEL.is_file() else None
