"""Frames -> .mp4 (H.264 through imageio-ffmpeg's bundled ffmpeg) or .gif (Pillow), written atomically."""

from __future__ import annotations

import errno
import io
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import FacesynthError
from .atomic import atomic_path, write_bytes_atomic

VIDEO_SUFFIXES = (".mp4", ".gif")


def check_video_path(path: str | Path) -> Path:
    path = Path(path)
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        raise FacesynthError(f"{path}: video output must end in {' or '.join(VIDEO_SUFFIXES)}")
    if path.suffix.lower() == ".mp4":
        _ffmpeg()
    return path


def _ffmpeg():
    try:
        import imageio_ffmpeg
    except ImportError:
        raise FacesynthError("writing .mp4 needs imageio-ffmpeg: pip install 'facesynth[video]' "
                             "(or write a .gif)") from None
    return imageio_ffmpeg


def upscale(frame: np.ndarray, factor: int) -> np.ndarray:
    if factor <= 1:
        return frame
    h, w = frame.shape[:2]
    return np.asarray(Image.fromarray(frame).resize((w * factor, h * factor), Image.LANCZOS))


def _disk_full(path: Path, margin: int = 2**20) -> bool:
    try:
        return shutil.disk_usage(path.parent).free < margin
    except OSError:
        return False


def _ffmpeg_failure(e: Exception, tmp: Path) -> OSError:
    """ffmpeg died while writing (most often the disk filled up under it): one line, not its whole log."""
    if _disk_full(tmp):
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    text = str(e).strip()
    return OSError(getattr(e, "errno", None), text.splitlines()[0] if text else type(e).__name__)


def write_video(frames: Iterable[np.ndarray], path: str | Path, fps: float = 30.0, quality: int = 8,
                mark=None) -> int:
    """Write uint8 [H, W, 3] frames; returns how many.  The file appears only when complete.  With ``mark`` (a
    provenance.Provenance) every frame is watermarked and the file signed."""
    from ..provenance import marked, sign_file, signed

    path = check_video_path(path)
    frames = (marked(f, mark) for f in frames)
    if path.suffix.lower() == ".gif":
        images = [Image.fromarray(f) for f in frames]
        if not images:
            raise FacesynthError(f"{path}: no frames to write")
        buf = io.BytesIO()
        images[0].save(buf, format="GIF", save_all=True, append_images=images[1:],
                       duration=max(20, round(1000 / fps)), loop=0, optimize=False)
        write_bytes_atomic(path, signed(buf.getvalue(), "image/gif", mark, path.name))
        return len(images)
    ffmpeg = _ffmpeg()
    count = 0
    with atomic_path(path) as tmp:
        writer = None
        try:
            for frame in frames:
                try:
                    if writer is None:
                        h, w = frame.shape[:2]
                        # H.264 in yuv420p needs even sizes; mp4 is named explicitly since tmp has no suffix.
                        writer = ffmpeg.write_frames(str(tmp), (w, h), fps=fps, quality=quality,
                                                     macro_block_size=2, output_params=["-f", "mp4"])
                        writer.send(None)
                    writer.send(np.ascontiguousarray(frame))
                except (OSError, RuntimeError) as e:
                    raise _ffmpeg_failure(e, tmp) from None
                count += 1
        finally:
            if writer is not None:
                try:
                    writer.close()
                except (OSError, RuntimeError) as e:
                    raise _ffmpeg_failure(e, tmp) from None
        if count == 0:
            raise FacesynthError(f"{path}: no frames to write")
        sign_file(tmp, "video/mp4", mark, path.name)
    return count
