"""Tensors in [-1, 1] -> 8-bit pictures: single images and grids, written atomically."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .atomic import write_bytes_atomic


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """[N, C, H, W] in [-1, 1] -> uint8 [N, H, W, C]."""
    x = (images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5
    return x.round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def make_grid(images: torch.Tensor | np.ndarray, cols: int | None = None, pad: int = 0,
              upscale: int = 1) -> np.ndarray:
    """Tile N images row-major into one uint8 [H, W, 3] array."""
    arr = to_uint8(images) if torch.is_tensor(images) else images
    n, h, w, c = arr.shape
    cols = cols or max(1, int(math.ceil(math.sqrt(n))))
    rows = int(math.ceil(n / cols))
    grid = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, c), 255, dtype=np.uint8)
    for i in range(n):
        r, q = divmod(i, cols)
        y, x = pad + r * (h + pad), pad + q * (w + pad)
        grid[y:y + h, x:x + w] = arr[i]
    if upscale > 1:
        grid = grid.repeat(upscale, axis=0).repeat(upscale, axis=1)
    return grid[..., 0] if c == 1 else grid


def save_png(array: np.ndarray, path: str | Path, mark=None) -> None:
    """Writes a PNG atomically; with ``mark`` (a provenance.Provenance) watermarked and signed."""
    from ..provenance import marked, signed

    buf = io.BytesIO()
    Image.fromarray(marked(array, mark)).save(buf, format="PNG")
    write_bytes_atomic(path, signed(buf.getvalue(), "image/png", mark, Path(path).name))


def save_grid(images: torch.Tensor, path: str | Path, cols: int | None = None, min_size: int = 256,
              tile: int | None = None) -> None:
    """Save a grid, upscaled (nearest) so that small images stay visible, or to ``tile`` pixels each."""
    h = images.shape[-1]
    upscale = min(max(1, min_size // h), 4) if h < min_size else 1
    if tile:
        upscale = max(upscale, tile // h)
    save_png(make_grid(images, cols, upscale=upscale), path)


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: one fixed-size bitmap font
        return ImageFont.load_default()


def label_rows(grid: np.ndarray, labels: list[str], row_height: int, top: int = 0, width: int = 0) -> np.ndarray:
    """Prepend a white column with ``labels[i]`` beside the i-th row (rows start ``top`` pixels down)."""
    from PIL import ImageDraw

    size = max(10, min(24, row_height // 6))
    font = _font(size)
    # Wide enough for the longest line as this font draws it, so no label runs into the images.
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    longest = max((measure.textlength(line, font=font) for t in labels if t for line in t.split("\n")), default=0)
    width = width or max(int(longest) + size, 8 * size, row_height)
    canvas = Image.new("RGB", (width + grid.shape[1], grid.shape[0]), "white")
    canvas.paste(Image.fromarray(grid), (width, 0))
    draw = ImageDraw.Draw(canvas)
    for i, text in enumerate(labels):
        if text:
            lines = text.split("\n")
            y0 = top + i * row_height + (row_height - len(lines) * (size + 2)) // 2
            for j, line in enumerate(lines):
                draw.text((size // 2, y0 + j * (size + 2)), line, fill="black", font=font)
    return np.asarray(canvas)
