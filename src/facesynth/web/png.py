"""Pixels to PNG bytes, and a cache of them bounded by size.

An image the API draws depends only on its parameters (the noise is fixed), so a repeated request - a
shared link, the slider moved back - is answered from memory with the same bytes for as long as the cache
keeps them.  Drawn again (after a restart, or once evicted) it is the same face but not always the same
bytes: the batcher draws it with whatever other requests arrived together, and a CPU's kernels round
differently for different batch sizes, so a pixel or two may land one 8-bit level apart.
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict

import numpy as np
from PIL import Image


def encode_png(pixels: np.ndarray, size: int | None = None) -> bytes:
    """uint8 [H, W, 3] -> PNG, scaled (Lanczos) so its height is ``size`` when given."""
    img = Image.fromarray(np.ascontiguousarray(scaled(pixels, size)))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def marked_png(frames, columns: int = 1, size: int | None = None, mark=None, title: str = "face.png") -> bytes:
    """Frames (uint8 [H, W, 3] each) tiled ``columns`` to a row as one PNG; with ``mark`` (a
    provenance.Provenance) each frame watermarked at its final size, so one cut out of a strip still carries
    it, and the whole file signed."""
    from ..provenance import marked, signed

    cells = [marked(scaled(f, size), mark) for f in frames]
    return signed(encode_png(tile(np.stack(cells), columns)), "image/png", mark, title)


def scaled(pixels: np.ndarray, size: int | None) -> np.ndarray:
    """uint8 [H, W, 3] scaled (Lanczos) so its height is ``size``, when given."""
    if not size or size == pixels.shape[0]:
        return pixels
    img = Image.fromarray(np.ascontiguousarray(pixels))
    return np.asarray(img.resize((round(img.width * size / img.height), size), Image.LANCZOS))


def tile(frames: np.ndarray, columns: int = 1, size: int | None = None) -> np.ndarray:
    """[N, H, W, 3] -> one image, ``columns`` frames to a row (each scaled to height ``size`` first, so no
    frame bleeds into its neighbour); a last row left short is filled with black."""
    frames = [scaled(f, size) for f in frames]
    rows = [frames[i:i + columns] for i in range(0, len(frames), columns)]
    rows[-1] += [np.zeros_like(frames[0])] * (columns - len(rows[-1]))
    return np.concatenate([np.concatenate(row, axis=1) for row in rows], axis=0)


class PngCache:
    """Least recently used PNGs, up to ``max_bytes`` in all."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple, bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, key: tuple) -> bytes | None:
        with self._lock:
            data = self._items.get(key)
            if data is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return data

    def put(self, key: tuple, data: bytes) -> None:
        if len(data) > self.max_bytes:
            return
        with self._lock:
            old = self._items.pop(key, None)
            self._bytes += len(data) - (len(old) if old is not None else 0)
            self._items[key] = data
            while self._bytes > self.max_bytes:
                _, dropped = self._items.popitem(last=False)
                self._bytes -= len(dropped)

    def stats(self) -> dict:
        return {"entries": len(self._items), "bytes": self._bytes, "hits": self.hits, "misses": self.misses}
