"""Safetensors files read and written safely: every header field checked against the file before a byte
of tensor data is read, pickles recognised and refused, write failures raised as OSError."""

from __future__ import annotations

import errno
import json
import math
import os
import re
import struct
from pathlib import Path

import safetensors.torch
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from ..errors import FacesynthError

MAX_HEADER_BYTES = 100 * 2**20  # a larger header is refused unread

# Bytes per element of every dtype safetensors writes; anything else in a header is refused.
DTYPE_SIZES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
               "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}
MAX_DIMS = 16
_PICKLE_SIGNS = ((b"PK\x03\x04", "a zip archive (torch.save's format, or an .npz: it may hold pickled Python)"),
                 (b"\x80", "a Python pickle"), (b"\x93NUMPY", "a NumPy array file"))


def _what_is(head: bytes) -> str:
    for sign, what in _PICKLE_SIGNS:
        if head.startswith(sign):
            return what
    return "a damaged file or another format"


def safetensors_header(path: Path) -> tuple[dict, dict[str, tuple[str, tuple[int, ...]]]]:
    """(metadata, {name: (dtype, shape)}) of a safetensors file, after checking every field of its header
    against the file: nothing is unpickled, and nothing larger than the header is read or allocated."""
    path = Path(path)

    def bad(problem: str) -> FacesynthError:
        return FacesynthError(f"{path}: not a valid safetensors file ({problem})")

    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise bad("too short")
            (n,) = struct.unpack("<Q", head)
            if n <= 1 or n > MAX_HEADER_BYTES or n + 8 > size:
                what = _what_is(head)
                if what != "a damaged file or another format":
                    raise FacesynthError(f"{path}: refused: this is {what}, not safetensors; facesynth never "
                                         "loads pickles (they can run code)")
                raise bad(f"header length {n} does not fit a file of {size} bytes")
            raw = f.read(n)
        header = json.loads(raw.decode("utf-8"))
    except FacesynthError:
        raise
    except FileNotFoundError:
        raise FacesynthError(f"{path}: no such file") from None
    except OSError as e:
        raise FacesynthError(f"{path}: cannot read ({e.strerror or e})") from None
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        if _what_is(head) != "a damaged file or another format":
            raise FacesynthError(f"{path}: refused: this is {_what_is(head)}, not safetensors; facesynth never "
                                 "loads pickles (they can run code)") from None
        raise bad(f"header is not JSON: {type(e).__name__}") from None
    if not isinstance(header, dict):
        raise bad(f"header is a JSON {type(header).__name__}, not an object")
    meta = header.pop("__metadata__", None)
    if meta is None:
        meta = {}
    if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise bad("__metadata__ must map names to strings")
    data_size = size - 8 - n
    tensors, spans = {}, []
    for name, entry in header.items():
        if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
            raise bad(f"tensor {name!r} is not described by exactly dtype, shape and data_offsets")
        dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if not isinstance(dtype, str) or dtype not in DTYPE_SIZES:
            raise bad(f"tensor {name!r} has unknown dtype {str(dtype)[:20]!r}")
        if (not isinstance(shape, list) or len(shape) > MAX_DIMS
                or not all(type(d) is int and 0 <= d <= data_size for d in shape)):
            raise bad(f"tensor {name!r} has an invalid shape {str(shape)[:60]}")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int for o in offsets)
                and 0 <= offsets[0] <= offsets[1] <= data_size):
            raise bad(f"tensor {name!r} has data offsets {str(offsets)[:60]} outside the file's "
                      f"{data_size} data bytes")
        if math.prod(shape) * DTYPE_SIZES[dtype] != offsets[1] - offsets[0]:
            raise bad(f"tensor {name!r}: shape {shape} x {dtype} needs {math.prod(shape) * DTYPE_SIZES[dtype]} "
                      f"bytes, its data range holds {offsets[1] - offsets[0]}")
        tensors[name] = (dtype, tuple(shape))
        spans.append((offsets[0], offsets[1], name))
    end = 0
    for start, stop, name in sorted(spans):
        if start != end:
            raise bad(f"tensor {name!r} overlaps another or leaves a gap (data at byte {start}, expected {end})")
        end = stop
    if end != data_size:
        raise bad(f"the tensors cover {end} of the file's {data_size} data bytes")
    return meta, tensors


def check_safetensors(path: Path) -> dict:
    """Validate the header of a safetensors file before handing it to the loader; returns its metadata."""
    return safetensors_header(path)[0]


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors file, read only after its header has passed the checks."""
    check_safetensors(path)
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise FacesynthError(f"{path}: damaged safetensors file ({e})") from None


def save_file(tensors: dict[str, torch.Tensor], filename: str, metadata: dict[str, str] | None = None) -> None:
    """safetensors' save_file, with its I/O failures (a full disk, a read-only folder) raised as OSError
    with their errno, so the callers' write handling (temporary files removed, one clear line) applies."""
    try:
        safetensors.torch.save_file(tensors, filename, metadata=metadata)
    except SafetensorError as e:
        m = re.search(r"os error (\d+)", str(e))
        if m:
            code = int(m.group(1))
            raise OSError(code, os.strerror(code), filename) from None
        if "I/O error" in str(e) or "Io(" in str(e):
            raise OSError(errno.EIO, str(e), filename) from None
        raise
