"""The one entry point of the writers: what an output claims (a Provenance), its pixels watermarked and its
file signed.  Writers take ``mark=`` (None: a real photo, a training grid, or marking turned off)."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from . import watermark
from .manifest import ANIMATED_PHOTO, GENERATED, manifest_definition, sign, sign_bytes

NO_MARK_ENV = "FACESYNTH_NO_MARK"  # set by --no-mark, so child processes (the web page's animations) follow
WATERMARK_SCHEME = "facesynth-dct-ss-1"


@dataclass(frozen=True)
class Provenance:
    """How an output was made: stated in its Content Credentials, its model id carried by the watermark."""
    source_type: str  # GENERATED, or ANIMATED_PHOTO for a real photo set in motion
    model_sha256: str
    params: dict = field(default_factory=dict)

    @property
    def model_id(self) -> int:
        """16 bits of the model file's SHA-256: what the watermark can carry."""
        return int(self.model_sha256[:4], 16)

    def with_params(self, **params) -> Provenance:
        return replace(self, params={**self.params, **params})

    def claims(self) -> dict:
        return {"model_sha256": self.model_sha256, "parameters": self.params,
                "watermark": {"scheme": WATERMARK_SCHEME, "model_id": f"{self.model_id:04x}"}}


def enabled() -> bool:
    return os.environ.get(NO_MARK_ENV, "") in ("", "0")


def turn_off(command: str) -> None:
    """--no-mark: this process and its children write unmarked outputs; says so once."""
    os.environ[NO_MARK_ENV] = "1"
    print(f"facesynth {command}: warning: --no-mark: outputs carry no Content Credentials and no watermark "
          "(for research only; do not publish them)", file=sys.stderr)


def for_model(model_file: str | Path, **params) -> Provenance | None:
    """A generated output of the model in ``model_file``; None when marking is off."""
    from ..util.hashing import file_sha256

    if not enabled():
        return None
    return Provenance(GENERATED, file_sha256(model_file), params)


def for_animation(model_file: str | Path, sources, driver) -> Provenance | None:
    """A talking head: real photos (or the driver's first frame) moved by a generator."""
    from ..util.hashing import file_sha256

    if not enabled():
        return None
    params = {"driver_sha256": file_sha256(driver), "source_sha256": [file_sha256(s) for s in sources or []]}
    return Provenance(ANIMATED_PHOTO, file_sha256(model_file), params)


def marked(pixels: np.ndarray, mark: Provenance | None) -> np.ndarray:
    """uint8 [H, W, 3] with the watermark, when there is a mark."""
    return pixels if mark is None else watermark.embed(pixels, mark.model_id)


def signed(data: bytes, mime: str, mark: Provenance | None, title: str) -> bytes:
    """An encoded image with its Content Credentials, when there is a mark."""
    if mark is None:
        return data
    return sign_bytes(data, mime, manifest_definition(title, mark.source_type, mark.claims()))


def sign_file(path: Path, mime: str, mark: Provenance | None, title: str) -> None:
    """Signs a written file (a video) in place: through a sibling file, then renamed over it."""
    if mark is None:
        return
    out = path.with_name(path.name + ".signed")
    try:
        with open(path, "rb") as src, open(out, "w+b") as dest:
            sign(src, dest, mime, manifest_definition(title, mark.source_type, mark.claims()))
        os.replace(out, path)
    finally:
        out.unlink(missing_ok=True)
