"""`facesynth detect`: whether a picture or video was made here, by its Content Credentials and by its
watermark (which survives what strips the credentials)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..errors import FacesynthError
from . import manifest, watermark

MAX_VIDEO_FRAMES = 120  # the watermark's mean settles long before; a long clip is not decoded whole


def _frames_of(path: Path, mime: str | None):
    """(kind, uint8 frames) of an image, an animated GIF or an mp4; FacesynthError naming the file otherwise."""
    from ..data.images import BadImage, decode_image, looks_like_image, read_image_file, shown

    if mime == "video/mp4":
        from ..data.video import iter_frames

        return "video", iter_frames(path, MAX_VIDEO_FRAMES)
    with open(path, "rb") as f:
        head = f.read(16)
    if not looks_like_image(head):
        raise FacesynthError(f"{shown(path)}: neither an image nor an mp4 video")
    try:
        data = read_image_file(path)
        if mime == "image/gif":
            return _gif_frames(data, path)
        return "image", [decode_image(data, str(path))]
    except BadImage as e:
        raise FacesynthError(str(e)) from None


def _gif_frames(data: bytes, path: Path):
    import io

    from PIL import Image, ImageSequence

    from ..data.images import decode_image

    with Image.open(io.BytesIO(data)) as im:
        if getattr(im, "n_frames", 1) <= 1:
            return "image", [decode_image(data, str(path))]
        frames = [np.asarray(f.convert("RGB")) for _, f in zip(range(MAX_VIDEO_FRAMES), ImageSequence.Iterator(im))]
    return "video", frames


def chance(z: float) -> float:
    """How often an unmarked picture's tag reads at least ``z`` (the z-score is about N(0, 1) there)."""
    return 0.5 * math.erfc(z / math.sqrt(2))


def detect_file(path: str | Path) -> dict:
    """What a file says of its making: its Content Credentials and its watermark."""
    from ..data.images import shown

    path = Path(path)
    if not path.is_file():
        raise FacesynthError(f"{shown(path)}: no such file" if not path.exists() else f"{shown(path)}: not a file")
    try:
        with open(path, "rb") as f:
            mime = manifest.mime_of(f.read(16))
    except OSError as e:
        raise FacesynthError(f"{shown(path)}: cannot be read ({e.strerror or e})") from None
    kind, frames = _frames_of(path, mime)
    reading = watermark.read_frames(frames) if kind == "video" else watermark.read(frames[0])
    if reading is None:
        raise FacesynthError(f"{shown(path)}: no frames to read")
    mark = {"found": bool(reading.found), "z": round(float(reading.z), 2), "chance_if_unmarked": float(f"{chance(reading.z):.2g}"),
            "tier": reading.tier, "read": reading.hypothesis}
    if reading.found:
        mark.update(payload=f"facesynth:{reading.model_id:04x}", model_id=f"{reading.model_id:04x}",
                    weakest_bit=round(reading.bit_confidence, 2))
    credentials = manifest.read(path, mime) if mime else {"present": False}
    claimed = (credentials.get("claims") or {}).get("model_sha256", "")
    if reading.found and claimed:
        mark["matches_credentials"] = claimed[:4] == f"{reading.model_id:04x}"
    marked = bool(credentials.get("present") and credentials.get("valid")) or reading.found
    return {"file": str(path), "kind": kind, "marked": marked, "content_credentials": credentials, "watermark": mark}


def describe(report: dict) -> str:
    """One line for a person."""
    from ..data.images import shown

    cc, wm = report["content_credentials"], report["watermark"]
    if not cc.get("present"):
        cc_text = "none"
    elif not cc.get("valid"):
        cc_text = f"present but INVALID ({', '.join(cc.get('problems') or [cc.get('state', '?')])})"
    else:
        claims = cc.get("claims") or {}
        who = "this machine's facesynth key" if cc.get("trusted") else f"untrusted signer {cc.get('signer')!r}"
        parts = [claims.get("digital_source_type", "?"), f"by {claims.get('generator', '?')}"]
        if claims.get("model_sha256"):
            parts.append(f"model sha256 {claims['model_sha256'][:12]}…")
        parts += [f"{k} {v}" for k, v in (claims.get("parameters") or {}).items() if not k.endswith("sha256")]
        cc_text = f"valid, signed by {who}: " + ", ".join(parts)
    if wm["found"]:
        match = {True: ", matches the credentials", False: ", NOT the credentials' model"}.get(
            wm.get("matches_credentials"), "")
        wm_text = (f"found, {wm['payload']} (z {wm['z']:.1f}, chance if unmarked {wm['chance_if_unmarked']:.0e}"
                   f"{match}; {wm['read']})")
    else:
        wm_text = f"none (z {wm['z']:.1f})"
    verdict = "made by facesynth" if report["marked"] else "no facesynth mark"
    return f"{shown(report['file'])}: {verdict} — Content Credentials: {cc_text}; watermark: {wm_text}"
