"""Pixels to PNG bytes, and a cache of them bounded by size.

Every image the API draws is a pure function of its parameters (noise is fixed), so a repeated
request - a shared link, the slider moved back - is answered from memory, byte for byte.
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict

import numpy as np
from PIL import Image


def encode_png(pixels: np.ndarray, size: int | None = None) -> bytes:
    """uint8 [H, W, 3] -> PNG, scaled (Lanczos) so its height is ``size`` when given."""
    img = Image.fromarray(np.ascontiguousarray(pixels))
    if size and size != img.height:
        img = img.resize((round(img.width * size / img.height), size), Image.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def strip(frames: np.ndarray) -> np.ndarray:
    """[N, H, W, 3] -> one row [H, N * W, 3]."""
    return np.concatenate(list(frames), axis=1)


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
