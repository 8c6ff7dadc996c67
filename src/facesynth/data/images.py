"""Reading images from folders, zips and arrays, and bringing them to square 8-bit RGB.

Every reader yields ``(name, payload)`` pairs where the payload is either the
encoded bytes of a file or an already-decoded array, so one decode path serves
the dataset tool and training alike.
"""

from __future__ import annotations

import contextlib
import functools
import io
import math
import os
import re
import struct
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np
from numpy.lib import format as npy
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
# A file is read whole only after its first HEAD_BYTES show an image, and only up to MAX_FILE_BYTES: an image
# within MAX_IMAGE_PIXELS stored uncompressed at 8 bytes a pixel (16-bit RGBA, the widest these formats hold)
# takes 512 MiB, plus room for metadata.  So a zip member inflating to gigabytes costs HEAD_BYTES, not gigabytes.
HEAD_BYTES = 64 * 2**10
MAX_FILE_BYTES = 8 * MAX_IMAGE_PIXELS + 64 * 2**20  # 576 MiB
# More images than this in one .npy/.npz is a damaged header, not a data set (each one gets a name and an index).
MAX_ARRAY_IMAGES = 10**7

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
    "unreadable": "could not be read",
    "link_outside": "a link to outside the folder",
}


class BadImage(Exception):
    """One source file could not be turned into an image; the caller skips it.  ``problem`` is one of PROBLEMS."""

    def __init__(self, message: str, problem: str = "corrupt"):
        super().__init__(message)
        self.problem = problem if problem in PROBLEMS else "corrupt"


def is_image_name(name: str) -> bool:
    return Path(name).suffix.lower() in IMAGE_EXTENSIONS


def shown(name: str | os.PathLike) -> str:
    """A file name as every message shows it: as it is when all its characters are printable, else quoted and
    escaped (Python's repr), so that a newline, a terminal escape or a bidi override in a name from the user's
    data can neither split a message line nor reach the terminal, and the name stays recognisable."""
    text = os.fspath(name) if isinstance(name, os.PathLike) else str(name)
    return text if text.isprintable() else repr(text)


def printable(text: object) -> str:
    """Other text that may come from a file (a decoder's complaint): its unprintable characters escaped."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))


def given_path(path: str | os.PathLike, what: str) -> Path:
    """``path`` as a Path, refusing the empty string: Path("") is the current folder, which nobody means."""
    if not os.fspath(path):
        raise FacesynthError(f"the {what} path is empty: name a file or folder")
    return Path(path)


# --------------------------------------------------------------------------- sources

class ImageSource:
    """A folder (recursive), a zip file, or a .npy/.npz array of images, addressed by index."""

    def __init__(self, path: str | os.PathLike):
        self.path = given_path(path, "source")
        if not self.path.exists():
            raise FacesynthError(f"{shown(self.path)}: no such file or folder")
        self._zip: zipfile.ZipFile | None = None
        self._zip_pid = 0
        self._array: np.ndarray | None = None
        if self.path.is_dir():
            self.kind = "folder"
            self._root = _real(self.path)
            self.names = list_folder(self.path)
        elif self.path.suffix.lower() == ".zip":
            self.kind = "zip"
            try:
                with zipfile.ZipFile(self.path) as zf:
                    self.names = sorted(n for n in zf.namelist() if is_image_name(n) and not n.endswith("/"))
            except (zipfile.BadZipFile, OSError) as e:
                raise FacesynthError(f"{shown(self.path)}: not a readable zip file ({printable(e)})") from None
        elif self.path.suffix.lower() in ARRAY_EXTENSIONS:
            self.kind = "array"
            self._array = load_image_array(self.path)
            self.names = [f"{i:08d}" for i in range(len(self._array))]
        else:
            raise FacesynthError(
                f"{shown(self.path)}: not a folder, a .zip or a .npy/.npz image array")

    def __len__(self) -> int:
        return len(self.names)

    def read(self, index: int) -> bytes | np.ndarray:
        """The encoded bytes of one file (or one image of an array).  BadImage when the file is no image, or
        one too large to decode, judged from its first bytes and its size before the rest is read."""
        name = self.names[index]
        if self.kind == "array":
            if self._array is None:  # dropped when pickled for a spawned worker (it is memory-mapped)
                self._array = load_image_array(self.path)
            return self._array[index]
        if self.kind == "folder":
            return read_image_file(self._inside(name), name)
        try:
            info = self._zipfile().getinfo(name)
            with self._zipfile().open(info) as f:
                return read_bounded(f, info.file_size, name)
        except OSError as e:
            raise BadImage(f"{shown(name)}: cannot be read ({printable(e.strerror or e)})", "unreadable") from None
        except (zipfile.BadZipFile, zlib.error, EOFError) as e:
            raise BadImage(f"{shown(name)}: damaged zip member ({printable(e)})", "corrupt") from None
        except (NotImplementedError, RuntimeError) as e:  # an encrypted member, or an unsupported compression
            raise BadImage(f"{shown(name)}: cannot be read ({printable(e)})", "unreadable") from None

    def _inside(self, name: str) -> Path:
        """The real path of the folder's file ``name``; BadImage when a link leads out of the folder (a user's
        /etc/passwd is no face, and its contents are not ours to report)."""
        real = _real(self.path / name)
        if not real.is_relative_to(self._root):
            raise BadImage(f"{shown(name)}: a link to outside the folder", "link_outside")
        return real

    def _zipfile(self) -> zipfile.ZipFile:
        if self._zip is None or self._zip_pid != os.getpid():
            # Opened lazily, and again in each forked data-loader worker: a handle inherited from the parent
            # shares its file offset with the parent and the other workers, and their reads would interleave.
            self._zip, self._zip_pid = zipfile.ZipFile(self.path), os.getpid()
        return self._zip

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_zip"] = None
        if self.kind == "array" and isinstance(self._array, np.memmap):
            state["_array"] = None  # mapped again where it is unpickled, not copied through a pipe
        return state

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()
            self._zip = None


def list_folder(folder: Path) -> list[str]:
    """The image files under ``folder`` (names relative to it, sorted), each real file once.  Links are not
    followed while listing: a link to a file inside the folder is listed only when its target is not listed
    already; a link leading outside (to a file with an image name, or to a folder) is listed so that reading it
    reports it (ImageSource._inside), once, rather than being read or dropped in silence."""
    root = _real(folder)
    files: list[str] = []
    links: list[Path] = []
    pending = [folder]
    while pending:  # a stack, not recursion: folders nest deeper than Python recurses
        try:
            entries = list(os.scandir(pending.pop()))
        except OSError:
            continue  # an unreadable subfolder holds nothing we can read
        for e in entries:
            if e.is_symlink():
                links.append(Path(e.path))
            elif e.is_dir(follow_symlinks=False):
                pending.append(Path(e.path))
            elif e.is_file(follow_symlinks=False) and is_image_name(e.name):
                files.append(os.path.relpath(e.path, folder))
    seen = {root / f for f in files}
    for link in sorted(links):
        target = _real(link)
        if not target.is_relative_to(root):
            if is_image_name(link.name) or os.path.isdir(target):
                files.append(os.path.relpath(link, folder))
        elif is_image_name(link.name) and os.path.isfile(target) and target not in seen:
            seen.add(target)
            files.append(os.path.relpath(link, folder))
    return sorted(files)


def _real(path: str | os.PathLike) -> Path:
    """``path`` with every link resolved, as far as they resolve (a loop or a dangling link is not an error here:
    opening it is, and says so)."""
    return Path(os.path.realpath(path))


@functools.cache
def _signature_tests() -> tuple:
    Image.init()
    return tuple(Image.OPEN[f][1] for f in PIL_FORMATS if f in Image.OPEN)


def looks_like_image(head: bytes) -> bool:
    """Whether one of PIL_FORMATS' readers would try a file starting with ``head``: the same signature tests
    PIL's open runs on a file's first 16 bytes."""
    for accept in _signature_tests():
        try:
            result = accept(head[:16]) if accept else True
        except DECODER_ERRORS:  # a test that reads past a short file's end (DIB's), as PIL's open allows for
            continue
        if result and not isinstance(result, str):  # a str is PIL's reason for declining
            return True
    return False


def read_image_file(path: str | os.PathLike, name: str | None = None) -> bytes:
    """The bytes of the image file ``path`` (messages call it ``name``), read as read_bounded reads; BadImage
    when it is none, or cannot be read (permissions, a vanished file, a dangling link)."""
    name = str(path) if name is None else name
    try:
        with open(path, "rb") as f:
            return read_bounded(f, os.fstat(f.fileno()).st_size, name)
    except OSError as e:
        raise BadImage(f"{shown(name)}: cannot be read ({printable(e.strerror or e)})", "unreadable") from None


def read_bounded(f, size: int, name: str) -> bytes:
    """All of the open file or zip member ``f`` (of ``size`` bytes declared), read only after its first
    HEAD_BYTES say it is an image of at most MAX_IMAGE_PIXELS (when the header fits in them) and its size is
    at most MAX_FILE_BYTES.  Anything else is BadImage having cost HEAD_BYTES of memory however large it is."""
    head = f.read(HEAD_BYTES)
    if not head:
        raise BadImage(f"{shown(name)}: empty file (0 bytes)", "empty")
    if not looks_like_image(head):
        raise BadImage(f"{shown(name)}: not an image (no JPEG, PNG, WebP, BMP, TIFF, GIF or PPM header)",
                       "not_an_image")
    _check_head_pixels(head, name)
    if size > MAX_FILE_BYTES:
        raise BadImage(f"{shown(name)}: file too large ({_size(size)}; an image within {_side_limit()} takes at "
                       f"most {_size(MAX_FILE_BYTES)}), refused unread", "too_large")
    if len(head) < HEAD_BYTES:
        return head  # the whole file
    f.seek(0)  # read again from the start rather than join the head to the rest: one copy in memory, not two
    data = f.read(size + 1)
    if len(data) > MAX_FILE_BYTES:  # grew since its size was taken
        raise BadImage(f"{shown(name)}: file too large (over {_size(MAX_FILE_BYTES)})", "too_large")
    return data


def _check_head_pixels(head: bytes, name: str) -> None:
    """BadImage("too_large") when the header within ``head`` declares too many pixels; nothing when the
    header reaches further (a JPEG's EXIF, a TIFF's directory at its end): decoding checks those."""
    try:
        with Image.open(io.BytesIO(head), formats=PIL_FORMATS) as im:
            size = im.size
    except Image.DecompressionBombError as e:
        raise _bomb(e, name) from None
    except (Image.UnidentifiedImageError, *DECODER_ERRORS):
        return
    check_pixels(size, name)


def _size(n: int) -> str:
    if n >= 2**30:
        return f"{n / 2**30:.1f} GiB"
    return f"{n / 2**20:.0f} MiB" if n >= 2**20 else f"{n} bytes"


def _side_limit() -> str:
    side = int(MAX_IMAGE_PIXELS ** 0.5)
    return f"{side}x{side} pixels"


def collect_files(paths, accept, what: str) -> list[Path]:
    """Files named in ``paths``, folders searched recursively for names ``accept`` takes (sorted);
    a missing path, or nothing found, is a FacesynthError saying so."""
    files = []
    for p in (given_path(p, "input") for p in paths):
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.is_file() and accept(f.name))
        elif p.is_file():
            files.append(p)
        else:
            raise FacesynthError(f"{shown(p)}: no such file or folder")
    if not files:
        raise FacesynthError(f"{', '.join(map(shown, paths))}: no {what} found")
    return files


# --------------------------------------------------------------------------- arrays

def load_image_array(path: Path) -> np.ndarray:
    """[N, H, W, C] images from a .npy (memory-mapped: read from disk as needed) or a .npz (read into memory),
    never unpickled.  The array's header is checked before any of its data is read (its dtype, and its shape
    against the size of the file and the limits on images), so that a header declaring hundreds of gigabytes
    is one line naming the file and the shape, not an allocation."""
    try:
        with open(path, "rb") as f:
            magic = f.read(len(npy.MAGIC_PREFIX))
        if magic == npy.MAGIC_PREFIX:
            arr = _load_npy(path)
        elif magic.startswith(b"PK"):
            arr = _load_npz(path)
        else:
            raise ValueError("neither .npy nor .npz data")
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error, NotImplementedError, RuntimeError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise FacesynthError(f"{shown(path)}: not a readable numpy array ({printable(reason)})") from None
    except MemoryError:
        raise FacesynthError(f"{shown(path)}: too large to hold in memory") from None
    if arr.ndim == 3:
        arr = arr[..., None]
    return arr.transpose(0, 2, 3, 1) if _channels_first(arr.shape) else arr


def _read_npy_header(f) -> tuple[tuple[int, ...], np.dtype, int]:
    """Shape, dtype and the header's length of the .npy stream ``f``, read from its header alone."""
    version = npy.read_magic(f)
    if version == (1, 0):
        shape, _, dtype = npy.read_array_header_1_0(f)
    elif version in ((2, 0), (3, 0)):
        shape, _, dtype = npy.read_array_header_2_0(f)
    else:
        raise ValueError(f".npy format version {version}")
    return tuple(shape), dtype, f.tell()


def _load_npy(path: Path) -> np.ndarray:
    with open(path, "rb") as f:
        shape, dtype, offset = _read_npy_header(f)
        size = os.fstat(f.fileno()).st_size
    nbytes = _check_array_header(path, shape, dtype, size - offset)
    return np.load(path, mmap_mode="r" if nbytes else None, allow_pickle=False)


def _load_npz(path: Path) -> np.ndarray:
    """The "images" array of a .npz (else its first), its header checked before it is decompressed."""
    with zipfile.ZipFile(path) as zf:
        members = [i for i in zf.infolist() if i.filename.endswith(".npy")]
        if not members:
            raise FacesynthError(f"{shown(path)}: the .npz archive holds no arrays")
        info = next((i for i in members if i.filename == "images.npy"), members[0])
        with zf.open(info) as f:
            shape, dtype, offset = _read_npy_header(f)
        nbytes = _check_array_header(path, shape, dtype, info.file_size - offset)
        memory = _memory_bytes()
        if memory and nbytes > memory // 2:
            raise FacesynthError(
                f"{shown(path)}: its array of shape {list(shape)} takes {_size(nbytes)} once decompressed, over half "
                f"of this machine's {_size(memory)} of memory: save it with np.save as .npy, which is read from disk "
                "as needed")
        with zf.open(info) as f:
            return npy.read_array(f, allow_pickle=False)


def _check_array_header(path: Path, shape: tuple[int, ...], dtype: np.dtype, available: int) -> int:
    """FacesynthError unless ``shape`` and ``dtype`` describe images this file holds; their bytes otherwise."""
    if dtype.hasobject:
        raise FacesynthError(f"{shown(path)}: refused: the array holds pickled Python objects, which facesynth "
                             "never loads (they can run code)")
    if dtype.kind not in "biuf":
        raise FacesynthError(f"{shown(path)}: the array holds {dtype} values, not pixel values")
    if len(shape) not in (3, 4):
        raise FacesynthError(f"{shown(path)}: expected images shaped [N,H,W(,C)] or [N,C,H,W], got {list(shape)}")
    n, h, w, c = _nhwc(shape)
    if c not in (1, 3, 4):
        raise FacesynthError(f"{shown(path)}: images must have 1, 3 or 4 channels, got shape {list(shape)}")
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes > available:
        raise FacesynthError(f"{shown(path)}: its header declares shape {list(shape)} of {dtype} ({_size(nbytes)}), "
                             f"but the file holds {_size(available)} of data: damaged or not an image array")
    if h * w > MAX_IMAGE_PIXELS:
        raise FacesynthError(f"{shown(path)}: shape {list(shape)} declares images of {w}x{h} pixels, over the "
                             f"{_side_limit()} limit")
    if n > MAX_ARRAY_IMAGES:
        raise FacesynthError(f"{shown(path)}: shape {list(shape)} declares {n} images, over the {MAX_ARRAY_IMAGES} "
                             "one array may hold")
    return nbytes


def _channels_first(shape: tuple[int, ...]) -> bool:
    return len(shape) == 4 and shape[1] in (1, 3, 4) and shape[-1] not in (1, 3, 4)


def _nhwc(shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    if len(shape) == 3:
        return (*shape, 1)
    n, a, b, c = shape
    return (n, b, c, a) if _channels_first(shape) else (n, a, b, c)


def _memory_bytes() -> int:
    """This machine's physical memory (0 where the system does not say)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 0


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
        raise BadImage(f"{shown(name)}: empty file (0 bytes)", "empty")
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
        raise BadImage(f"{shown(name)}: not an image (no JPEG, PNG, WebP, BMP, TIFF, GIF or PPM header)",
                       "not_an_image") from None
    except DECODER_ERRORS as e:
        raise _damaged(e, name) from None
    except MemoryError:
        raise BadImage(f"{shown(name)}: too large to decode in memory", "too_large") from None


def check_header(payload: bytes | np.ndarray, name: str = "<image>") -> None:
    """The checks that need only a file's header (cheap: nothing is decoded): empty, not an image, too large,
    too small, aspect ratio.  BadImage with the problem; a truncated or corrupt body shows only when decoded."""
    if isinstance(payload, np.ndarray):
        return
    if len(payload) == 0:
        raise BadImage(f"{shown(name)}: empty file (0 bytes)", "empty")
    with _decoder_errors(name), Image.open(io.BytesIO(payload), formats=PIL_FORMATS) as im:
        size = im.size
    check_pixels(size, name)
    check_geometry(*size, name)


def _damaged(e: Exception, name: str) -> BadImage:
    """A decoder's complaint as BadImage: truncated when the data ends early, else corrupt."""
    reason = printable(str(e) or type(e).__name__)
    truncated = any(w in reason.lower() for w in ("truncated", "broken data stream", "eof", "premature end"))
    return BadImage(f"{shown(name)}: {'truncated' if truncated else 'corrupt'} ({reason})",
                    "truncated" if truncated else "corrupt")


def _bomb(e: Exception, name: str) -> BadImage:
    declared = re.search(r"\((\d+) pixels\)", str(e))
    size = f"{int(declared.group(1))} pixels declared" if declared else "too many pixels declared"
    return BadImage(f"{shown(name)}: image too large ({size}, the limit is {MAX_IMAGE_PIXELS}), refused before "
                    "decoding", "too_large")


def check_pixels(size: tuple[int, int], name: str) -> None:
    """BadImage("too_large") when a header declares more than MAX_IMAGE_PIXELS: checked before any decoding."""
    w, h = size
    if w * h > MAX_IMAGE_PIXELS:
        raise BadImage(f"{shown(name)}: image too large ({w}x{h} = {w * h} pixels declared, the limit is "
                       f"{MAX_IMAGE_PIXELS}), refused before decoding", "too_large")


def check_geometry(w: int, h: int, name: str) -> None:
    """BadImage for images too small to train on or too far from square to crop into one."""
    if min(w, h) < MIN_SIDE:
        raise BadImage(f"{shown(name)}: image is only {w}x{h} pixels", "too_small")
    if max(w, h) > MAX_ASPECT_RATIO * min(w, h):
        raise BadImage(f"{shown(name)}: absurd aspect ratio ({w}x{h} pixels, over {MAX_ASPECT_RATIO:g}:1)",
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
        raise BadImage(f"{shown(name)}: empty image (no pixels)", "too_small")
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
            raise BadImage(f"{shown(name)}: array holds NaN or Inf", "corrupt")
        # Floats in [0,1] or [-1,1] are both common: map whichever range is present to 0..255.
        scaled = (arr + 1) / 2 if lo < 0 else arr
        scaled = scaled / 255.0 if hi > 1.0 else scaled
        out = np.clip(np.round(scaled * 255), 0, 255).astype(np.uint8)
    elif np.issubdtype(arr.dtype, np.integer):
        out = np.clip(arr, 0, 255).astype(np.uint8)
    else:
        raise BadImage(f"{shown(name)}: unsupported array dtype {arr.dtype}", "corrupt")
    if out.shape[-1] == 1:
        out = np.repeat(out, 3, axis=2)
    elif out.shape[-1] == 4:
        alpha = out[..., 3:4].astype(np.float32) / 255.0
        out = np.round(out[..., :3] * alpha + 255 * (1 - alpha)).astype(np.uint8)
    if out.shape[0] < 1 or out.shape[1] < 1:
        raise BadImage(f"{shown(name)}: empty image (no pixels)", "too_small")
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
