"""The face model that ships with facesynth: every command's --ckpt defaults to it.

See MODEL_CARD.md beside this file for its data, licence, training and known flaws.
"""

from __future__ import annotations

from pathlib import Path

DEFAULT_MODEL = Path(__file__).with_name("utkface-64.safetensors")
MODEL_CARD = Path(__file__).with_name("MODEL_CARD.md")


def default_model() -> Path | None:
    """The bundled model's path, or None when this installation has none (a trimmed copy)."""
    return DEFAULT_MODEL if DEFAULT_MODEL.is_file() else None
