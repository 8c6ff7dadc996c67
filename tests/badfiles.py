"""Broken and awkward image files of every kind a real pile of photos holds, for the data-robustness tests and
benchmarks: ``make_file(kind)`` makes one, ``inject_bad_files`` copies a zip (or folder) of good images and
mixes ~1% of them in.  ``KINDS`` says what facesynth should do with each: convert it (None) or skip it, with
the problem it should report (a key of ``facesynth.data.images.PROBLEMS``)."""

from __future__ import annotations

import functools
import io
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

# kind -> (file extension, the problem it must be skipped for, or None when it must be converted)
KINDS: dict[str, tuple[str, str | None]] = {
    "truncated_jpeg": (".jpg", "truncated"),
    "truncated_png": (".png", "truncated"),
    "cmyk_jpeg": (".jpg", None),
    "png16_grey": (".png", None),  # PIL mode I;16
    "png16_rgb": (".png", None),  # 16 bits per channel
    "greyscale": (".jpg", None),
    "one_pixel": (".png", "too_small"),
    "bomb": (".png", "too_large"),  # declares 20000x20000 (1.2 GB as RGB), 1.2 MB on disk
    "text_as_jpeg": (".jpg", "not_an_image"),
    "random_as_jpeg": (".jpg", "not_an_image"),
    "zero_bytes": (".jpg", "empty"),
    "aspect_ratio": (".png", "aspect_ratio"),  # 800x20
}
BOMB_SIDE = 20000


def picture(rng: np.random.Generator, w: int = 64, h: int = 64) -> np.ndarray:
    """A smooth random picture (compresses like a photo, unlike noise)."""
    y, x = np.mgrid[:h, :w] / max(w, h)
    c = rng.uniform(0, 1, (3, 3))
    img = np.stack([c[k, 0] * x + c[k, 1] * y + c[k, 2] * np.sin(6 * x * y + k) for k in range(3)], -1)
    return (np.clip(img / 2 + 0.3, 0, 1) * 255).astype(np.uint8)


def _encode(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def _chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def png_bytes(width: int, height: int, bit_depth: int, colour_type: int, idat: bytes) -> bytes:
    """A PNG assembled by hand (PIL cannot write 16-bit RGB, nor a header that lies)."""
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def png16_rgb(arr: np.ndarray) -> bytes:
    """uint16 [H, W, 3] -> a 16-bit-per-channel RGB PNG."""
    raw = b"".join(b"\0" + row.astype(">u2").tobytes() for row in arr)
    return png_bytes(arr.shape[1], arr.shape[0], 16, 2, zlib.compress(raw))


@functools.lru_cache(maxsize=1)
def bomb_png(side: int = BOMB_SIDE) -> bytes:
    """A valid RGB PNG of side x side black pixels (1.2 GB decoded at 20000²) in about a megabyte: one
    deflate block of zero rows, repeated (each block refers only to its own output)."""
    row = 1 + side * 3
    rows_per_block = 100
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = c.compress(b"\0" * row * rows_per_block) + c.flush(zlib.Z_SYNC_FLUSH)
    full, rest = divmod(side, rows_per_block)
    parts = [block] * full
    if rest:
        c = zlib.compressobj(9, zlib.DEFLATED, -15)
        parts.append(c.compress(b"\0" * row * rest) + c.flush(zlib.Z_SYNC_FLUSH))
    end = zlib.compressobj(9, zlib.DEFLATED, -15).flush()
    total = row * side
    adler = ((total % 65521) << 16) | 1  # adler32 of zeros: a = 1, b = n
    return png_bytes(side, side, 8, 2, b"\x78\xda" + b"".join(parts) + end + struct.pack(">I", adler))


def make_file(kind: str, rng: np.random.Generator) -> bytes:
    """The bytes of one file of ``kind`` (see KINDS)."""
    img = picture(rng)
    if kind == "truncated_jpeg":
        data = _encode(Image.fromarray(img), "JPEG")
        return data[: int(len(data) * rng.uniform(0.2, 0.9))]
    if kind == "truncated_png":
        data = _encode(Image.fromarray(img), "PNG")
        return data[: int(len(data) * rng.uniform(0.2, 0.9))]
    if kind == "cmyk_jpeg":
        return _encode(Image.fromarray(img).convert("CMYK"), "JPEG")
    if kind == "png16_grey":
        return _encode(Image.fromarray(img[..., 0].astype(np.uint16) * 257), "PNG")
    if kind == "png16_rgb":
        return png16_rgb(img.astype(np.uint16) * 257)
    if kind == "greyscale":
        return _encode(Image.fromarray(img).convert("L"), "JPEG")
    if kind == "one_pixel":
        return _encode(Image.fromarray(img[:1, :1]), "PNG")
    if kind == "bomb":
        return bomb_png()
    if kind == "text_as_jpeg":
        return ("These are the notes of a photo shoot, not a photo.\n" * int(rng.integers(1, 20))).encode()
    if kind == "random_as_jpeg":
        return rng.bytes(int(rng.integers(1, 20000)))
    if kind == "zero_bytes":
        return b""
    if kind == "aspect_ratio":
        return _encode(Image.fromarray(picture(rng, 800, 20)), "PNG")
    raise ValueError(f"unknown kind {kind!r}")


def bad_file_name(kind: str, i: int, rng: np.random.Generator) -> str:
    """Named like UTKFace's files (age first), so that sorted they fall among the good ones."""
    return f"{int(rng.integers(1, 100))}_9_9_bad-{kind}-{i:04d}{KINDS[kind][0]}"


def bad_files(count: int, seed: int = 0) -> dict[str, tuple[str, bytes]]:
    """``count`` files, the kinds in turn: {name: (kind, bytes)}."""
    rng = np.random.default_rng(seed)
    kinds = list(KINDS)
    out = {}
    for i in range(count):
        kind = kinds[i % len(kinds)]
        out[bad_file_name(kind, i, rng)] = (kind, make_file(kind, rng))
    return out


def inject_bad_files(src: Path, dest: Path, fraction: float = 0.01, seed: int = 0,
                     max_good: int | None = None) -> dict[str, tuple[str, bytes]]:
    """Copy the images of zip ``src`` (the first ``max_good``) to ``dest`` (a .zip, or else a folder) with
    ``fraction`` as many bad files mixed in; returns the bad files added."""
    with zipfile.ZipFile(src) as zin:
        names = [n for n in zin.namelist() if not n.endswith("/")][:max_good]
        bad = bad_files(max(len(KINDS), round(len(names) * fraction)), seed)
        if dest.suffix.lower() == ".zip":
            with zipfile.ZipFile(dest, "w", zipfile.ZIP_STORED) as zout:
                for n in names:
                    zout.writestr(n, zin.read(n))
                for n, (_, data) in bad.items():
                    zout.writestr(n, data)
        else:
            dest.mkdir(parents=True, exist_ok=True)
            for n in names:
                (dest / Path(n).name).write_bytes(zin.read(n))
            for n, (_, data) in bad.items():
                (dest / n).write_bytes(data)
    return bad


def expected_problems(bad: dict[str, tuple[str, bytes]]) -> dict[str, int]:
    """{problem: count} the dataset tool should report for ``bad``."""
    out: dict[str, int] = {}
    for kind, _ in bad.values():
        problem = KINDS[kind][1]
        if problem:
            out[problem] = out.get(problem, 0) + 1
    return out


# --------------------------------------------------------------------------- files of gigabytes, made in no time

def _crc32_zeros(crc: int, n: int) -> int:
    """zlib.crc32(b"\\0" * n, crc) without making the n bytes: appending a zero byte is a linear map of CRC-32's
    register (columns probed with zlib itself), so n of them are that map's n-th power, by repeated squaring."""
    def apply(m: list[int], x: int) -> int:
        out, i = 0, 0
        while x:
            if x & 1:
                out ^= m[i]
            x, i = x >> 1, i + 1
        return out

    mask = 0xFFFFFFFF
    m = [~zlib.crc32(b"\0", ~(1 << i) & mask) & mask for i in range(32)]
    reg = ~crc & mask
    while n:
        if n & 1:
            reg = apply(m, reg)
        m, n = [apply(m, c) for c in m], n >> 1
    return ~reg & mask


def _deflated_zeros(head: bytes, zeros: int) -> bytes:
    """Raw deflate of ``head`` followed by ``zeros`` zero bytes: as in bomb_png, one block of zeros repeated
    (each refers only to its own output), so 3 GiB take 3 MB and no time to make."""
    def block(data: bytes) -> bytes:
        c = zlib.compressobj(9, zlib.DEFLATED, -15)
        return c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH)

    chunk = 2**20
    full, rest = divmod(zeros, chunk)
    parts = [block(head)] + [block(b"\0" * chunk)] * full + [block(b"\0" * rest)]
    return b"".join(parts) + zlib.compressobj(9, zlib.DEFLATED, -15).flush()


def zip_of_zeros(path: Path, members: dict[str, tuple[bytes, int]]) -> None:
    """A valid zip (sizes and CRCs true) whose member ``name`` is ``head`` followed by ``zeros`` zero bytes,
    written by hand since the zipfile module would have to compress every byte: members up to 4 GiB."""
    central = b""
    with open(path, "wb") as f:
        for name, (head, zeros) in members.items():
            data, raw = _deflated_zeros(head, zeros), name.encode()
            crc = _crc32_zeros(zlib.crc32(head), zeros)
            # version needed, flags, method (deflate), time, date (1980-01-01), crc, sizes, name and extra lengths
            fields = struct.pack("<HHHHHIIIHH", 20, 0, 8, 0, 0x21, crc, len(data), len(head) + zeros, len(raw), 0)
            offset = struct.pack("<HHHII", 0, 0, 0, 0, f.tell())  # comment, disk, attributes, where
            central += b"PK\x01\x02" + struct.pack("<H", 20) + fields + offset + raw
            f.write(b"PK\x03\x04" + fields + raw + data)
        start = f.tell()
        f.write(central + b"PK\x05\x06" + struct.pack("<HHHHIIH", 0, 0, len(members), len(members), len(central),
                                                     start, 0))


def sparse_file(path: Path, head: bytes, size: int) -> None:
    """``head`` then zeros up to ``size`` bytes, with no blocks written for the zeros."""
    with open(path, "wb") as f:
        f.write(head)
        f.truncate(size)
