"""Reading images from folders, zips and arrays, and bringing them to square 8-bit RGB.

Every reader yields ``(name, payload)`` pairs where the payload is either the
encoded bytes of a file or an already-decoded array, so one decode path serves
the dataset tool and training alike.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import struct
import warnings
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile

from ..errors import FacesynthError

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm", ".pgm"}
ARRAY_EXTENSIONS = {".npy", ".npz"}
# Refuse decompression bombs outright, from the header's size and before decoding, instead of letting PIL
# merely warn (it only raises past twice its limit).
MAX_IMAGE_PIXELS = 8192 * 8192
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
ImageFile.LOAD_TRUNCATED_IMAGES = False
# PIL warns between 1x and 2x its limit; check_pixels refuses those itself, before decoding, with a message.
# (A filter set once: catch_warnings() per call is not thread-safe, and the dataset tool decodes in threads.)
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
# Only the decoders of the formats we name: PIL would otherwise also try EPS (which runs Ghostscript), FITS,
# PSD, ICNS and a dozen more on any bytes that happen to start like one of them.
PIL_FORMATS = ("PNG", "JPEG", "BMP", "DIB", "WEBP", "TIFF", "GIF", "PPM")
# Past this ratio of the long to the short side a centre crop keeps under a quarter of the picture (and a pad
# is mostly black): a strip, a banner or a damaged header, not a photo to train on.
MAX_ASPECT_RATIO = 4.0
MIN_SIDE = 2

# Why a file is skipped: the keys of dataset.json's "skipped_problems".
PROBLEMS = {
    "empty": "0 bytes",
    "not_an_image": "not an image",
    "truncated": "truncated",
    "too_large": "too large (a decompression bomb?)",
    "too_small": "too small",
    "aspect_ratio": "absurd aspect ratio",
    "corrupt": "corrupt image data",
    "error": "decoder failure",
}


class BadImage(Exception):
    """One source file could not be turned into an image; the caller skips it.  ``problem`` is one of PROBLEMS."""

    def __init__(self, message: str, problem: str = "corrupt"):
        super().__init__(message)
        self.problem = problem if problem in PROBLEMS else "corrupt"


def is_image_name(name: str) -> bool:
    return Path(name).suffix.lower() in IMAGE_EXTENSIONS


# --------------------------------------------------------------------------- sources

class ImageSource:
    """A folder (recursive), a zip file, or a .npy/.npz array of images, addressed by index."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.exists():
            raise FacesynthError(f"{self.path}: no such file or folder")
        self._zip: zipfile.ZipFile | None = None
        self._zip_pid = 0
        self._array: np.ndarray | None = None
        if self.path.is_dir():
            self.kind = "folder"
            self.names = sorted(
                str(p.relative_to(self.path)) for p in self.path.rglob("*") if p.is_file() and is_image_name(p.name)
            )
        elif self.path.suffix.lower() == ".zip":
            self.kind = "zip"
            try:
                with zipfile.ZipFile(self.path) as zf:
                    self.names = sorted(n for n in zf.namelist() if is_image_name(n) and not n.endswith("/"))
            except (zipfile.BadZipFile, OSError) as e:
                raise FacesynthError(f"{self.path}: not a readable zip file ({e})") from None
        elif self.path.suffix.lower() in ARRAY_EXTENSIONS:
            self.kind = "array"
            self._array = load_image_array(self.path)
            self.names = [f"{i:08d}" for i in range(len(self._array))]
        else:
            raise FacesynthError(
                f"{self.path}: not a folder, a .zip or a .npy/.npz image array")

    def __len__(self) -> int:
        return len(self.names)

    def read(self, index: int) -> bytes | np.ndarray:
        name = self.names[index]
        if self.kind == "array":
            return self._array[index]
        if self.kind == "folder":
            return (self.path / name).read_bytes()
        if self._zip is None or self._zip_pid != os.getpid():
            # Opened lazily, and again in each forked data-loader worker: a handle inherited from the parent
            # shares its file offset with the parent and the other workers, and their reads would interleave.
            self._zip, self._zip_pid = zipfile.ZipFile(self.path), os.getpid()
        return self._zip.read(name)

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_zip"] = None
        return state

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()
            self._zip = None


def collect_files(paths, accept, what: str) -> list[Path]:
    """Files named in ``paths``, folders searched recursively for names ``accept`` takes (sorted);
    a missing path, or nothing found, is a FacesynthError saying so."""
    files = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.is_file() and accept(f.name))
        elif p.is_file():
            files.append(p)
        else:
            raise FacesynthError(f"{p}: no such file or folder")
    if not files:
        raise FacesynthError(f"{', '.join(map(str, paths))}: no {what} found")
    return files


def load_image_array(path: Path) -> np.ndarray:
    """Loads [N, H, W], [N, H, W, C] or [N, C, H, W] images from .npy/.npz without unpickling."""
    try:
        data = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as e:
        raise FacesynthError(f"{path}: not a readable numpy array ({e})") from None
    if isinstance(data, np.lib.npyio.NpzFile):
        keys = list(data.keys())
        if not keys:
            raise FacesynthError(f"{path}: the .npz archive holds no arrays")
        key = "images" if "images" in keys else keys[0]
        data = data[key]
    arr = np.asarray(data)
    if arr.ndim == 3:
        arr = arr[..., None]
    if arr.ndim != 4:
        raise FacesynthError(f"{path}: expected images shaped [N,H,W(,C)] or [N,C,H,W], got {list(arr.shape)}")
    if arr.shape[1] in (1, 3, 4) and arr.shape[-1] not in (1, 3, 4):
        arr = arr.transpose(0, 2, 3, 1)
    if arr.shape[-1] not in (1, 3, 4):
        raise FacesynthError(f"{path}: images must have 1, 3 or 4 channels, got shape {list(arr.shape)}")
    return arr


# --------------------------------------------------------------------------- decoding

# What PIL's decoders raise on malformed input: besides OSError and friends, plugins fail with whatever a
# corrupt field leads to (a TIFF offset stored as text raised TypeError under fuzzing).
DECODER_ERRORS = (OSError, ValueError, SyntaxError, EOFError, TypeError, IndexError, KeyError, ZeroDivisionError,
                  AttributeError, struct.error)


def decode_image(payload: bytes | np.ndarray, name: str = "<image>") -> np.ndarray:
    """Any supported image -> uint8 [H, W, 3] RGB.  Raises BadImage with the reason."""
    if isinstance(payload, np.ndarray):
        return _array_to_rgb8(payload, name)
    if len(payload) == 0:
        raise BadImage(f"{name}: empty file (0 bytes)", "empty")
    with _decoder_errors(name):
        with Image.open(io.BytesIO(payload), formats=PIL_FORMATS) as im:
            check_pixels(im.size, name)
            im.load()
            return _pil_to_rgb8(im, name)


@contextlib.contextmanager
def _decoder_errors(name: str):
    """What PIL raises while opening or decoding ``name``, as BadImage with the problem."""
    try:
        yield
    except BadImage:
        raise
    except Image.DecompressionBombError as e:
        raise _bomb(e, name) from None
    except Image.UnidentifiedImageError:
        raise BadImage(f"{name}: not an image (no JPEG, PNG, WebP, BMP, TIFF, GIF or PPM header)",
                       "not_an_image") from None
    except DECODER_ERRORS as e:
        raise _damaged(e, name) from None
    except MemoryError:
        raise BadImage(f"{name}: too large to decode in memory", "too_large") from None


def check_header(payload: bytes | np.ndarray, name: str = "<image>") -> None:
    """The checks that need only a file's header (cheap: nothing is decoded): empty, not an image, too large,
    too small, aspect ratio.  BadImage with the problem; a truncated or corrupt body shows only when decoded."""
    if isinstance(payload, np.ndarray):
        return
    if len(payload) == 0:
        raise BadImage(f"{name}: empty file (0 bytes)", "empty")
    with _decoder_errors(name), Image.open(io.BytesIO(payload), formats=PIL_FORMATS) as im:
        size = im.size
    check_pixels(size, name)
    check_geometry(*size, name)


def _damaged(e: Exception, name: str) -> BadImage:
    """A decoder's complaint as BadImage: truncated when the data ends early, else corrupt."""
    reason = str(e) or type(e).__name__
    truncated = any(w in reason.lower() for w in ("truncated", "broken data stream", "eof", "premature end"))
    return BadImage(f"{name}: {'truncated' if truncated else 'corrupt'} ({reason})",
                    "truncated" if truncated else "corrupt")


def _bomb(e: Exception, name: str) -> BadImage:
    declared = re.search(r"\((\d+) pixels\)", str(e))
    size = f"{int(declared.group(1))} pixels declared" if declared else "too many pixels declared"
    return BadImage(f"{name}: image too large ({size}, the limit is {MAX_IMAGE_PIXELS}), refused before "
                    "decoding", "too_large")


def check_pixels(size: tuple[int, int], name: str) -> None:
    """BadImage("too_large") when a header declares more than MAX_IMAGE_PIXELS: checked before any decoding."""
    w, h = size
    if w * h > MAX_IMAGE_PIXELS:
        raise BadImage(f"{name}: image too large ({w}x{h} = {w * h} pixels declared, the limit is "
                       f"{MAX_IMAGE_PIXELS}), refused before decoding", "too_large")


def check_geometry(w: int, h: int, name: str) -> None:
    """BadImage for images too small to train on or too far from square to crop into one."""
    if min(w, h) < MIN_SIDE:
        raise BadImage(f"{name}: image is only {w}x{h} pixels", "too_small")
    if max(w, h) > MAX_ASPECT_RATIO * min(w, h):
        raise BadImage(f"{name}: absurd aspect ratio ({w}x{h} pixels, over {MAX_ASPECT_RATIO:g}:1)",
                       "aspect_ratio")


def _pil_to_rgb8(im: Image.Image, name: str = "<image>") -> np.ndarray:
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(im, dtype=np.float64)
        # 16-bit PNG/TIFF: scale the full range to 8 bits; 32-bit int/float: min-max to 8 bits.
        if mode.startswith("I;16") or (mode == "I" and arr.max(initial=0) > 255):
            arr = arr / 257.0 if arr.max(initial=0) <= 65535 else _minmax(arr) * 255
        elif mode == "F":
            arr = _minmax(arr) * 255 if arr.max(initial=0) > 1.0 else arr * 255
        arr = np.clip(np.round(arr), 0, 255).astype(np.uint8)
        return np.repeat(arr[..., None], 3, axis=2)
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        background = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(background, im)
    if im.mode != "RGB":
        im = im.convert("RGB")  # L, 1, P, CMYK, YCbCr, LAB, HSV
    arr = np.asarray(im, dtype=np.uint8)
    if arr.ndim != 3 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise BadImage(f"{name}: empty image (no pixels)", "too_small")
    return arr


def _minmax(arr: np.ndarray) -> np.ndarray:
    lo, hi = float(arr.min(initial=0)), float(arr.max(initial=0))
    return (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)


def _array_to_rgb8(arr: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.dtype == np.uint8:
        out = arr
    elif arr.dtype == np.uint16:
        out = np.round(arr / 257.0).astype(np.uint8)
    elif np.issubdtype(arr.dtype, np.floating):
        lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
        if not np.isfinite(lo) or not np.isfinite(hi):
            raise BadImage(f"{name}: array holds NaN or Inf", "corrupt")
        # Floats in [0,1] or [-1,1] are both common: map whichever range is present to 0..255.
        scaled = (arr + 1) / 2 if lo < 0 else arr
        scaled = scaled / 255.0 if hi > 1.0 else scaled
        out = np.clip(np.round(scaled * 255), 0, 255).astype(np.uint8)
    elif np.issubdtype(arr.dtype, np.integer):
        out = np.clip(arr, 0, 255).astype(np.uint8)
    else:
        raise BadImage(f"{name}: unsupported array dtype {arr.dtype}", "corrupt")
    if out.shape[-1] == 1:
        out = np.repeat(out, 3, axis=2)
    elif out.shape[-1] == 4:
        alpha = out[..., 3:4].astype(np.float32) / 255.0
        out = np.round(out[..., :3] * alpha + 255 * (1 - alpha)).astype(np.uint8)
    if out.shape[0] < 1 or out.shape[1] < 1:
        raise BadImage(f"{name}: empty image (no pixels)", "too_small")
    return np.ascontiguousarray(out)


# --------------------------------------------------------------------------- geometry

def to_square(img: np.ndarray, mode: str = "crop") -> np.ndarray:
    """Centre-crop to a square, or pad the short side with black borders."""
    h, w = img.shape[:2]
    if h == w:
        return img
    if mode == "crop":
        s = min(h, w)
        top, left = (h - s) // 2, (w - s) // 2
        return img[top:top + s, left:left + s]
    if mode == "pad":
        s = max(h, w)
        out = np.zeros((s, s, img.shape[2]), dtype=img.dtype)
        top, left = (s - h) // 2, (s - w) // 2
        out[top:top + h, left:left + w] = img
        return out
    raise ValueError(f"square mode must be crop or pad, not {mode!r}")


def resize_square(img: np.ndarray, resolution: int) -> np.ndarray:
    """Resize a square image; down-scaling uses an area (box) pre-reduction then Lanczos, as PIL does."""
    if img.shape[0] == resolution and img.shape[1] == resolution:
        return img
    im = Image.fromarray(img)
    factor = im.width // resolution
    if factor >= 2:
        im = im.reduce(factor)  # exact box filter: cheap and alias-free for integer factors
    im = im.resize((resolution, resolution), Image.Resampling.LANCZOS)
    return np.asarray(im, dtype=np.uint8)


def prepare_image(payload: bytes | np.ndarray, name: str, resolution: int, square: str = "crop") -> np.ndarray:
    """Decode, square and resize one image to uint8 [R, R, 3]."""
    img = decode_image(payload, name)
    check_geometry(img.shape[1], img.shape[0], name)
    return resize_square(to_square(img, square), resolution)


def check_resolution(resolution: int) -> int:
    if not isinstance(resolution, int) or resolution < 4 or resolution > 4096 or resolution & (resolution - 1):
        raise FacesynthError(f"resolution must be a power of two between 4 and 4096, got {resolution}")
    return resolution
