"""Fuzzing targets shared by tests/test_fuzz.py (a short budget in CI) and benchmarks/fuzz.py (minutes each).

Each target is a hypothesis strategy of inputs and a ``check(input)`` that asserts the property: a valid result
or a clean error (BadImage naming the file, FacesynthError, an UploadError or a 4xx JSON answer), never another
exception, never a hang (``within`` runs the call in a thread with a deadline), never a 5xx."""

from __future__ import annotations

import functools
import io
import shutil
import tempfile
import threading
import zipfile
from pathlib import Path

import numpy as np
from hypothesis import strategies as st
from PIL import Image

from facesynth.data.images import PROBLEMS, BadImage, check_header, decode_image, prepare_image
from facesynth.errors import FacesynthError

IMAGE_TIMEOUT_S = 20.0
VIDEO_TIMEOUT_S = 60.0


class Hang(AssertionError):
    pass


def within(seconds: float, fn, *args, **kwargs):
    """fn(*args) in a daemon thread: its result or exception, or Hang past ``seconds``."""
    box: dict = {}

    def run():
        try:
            box["result"] = fn(*args, **kwargs)
        except BaseException as e:  # noqa: BLE001 - handed to the caller as is
            box["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(seconds)
    if t.is_alive():
        raise Hang(f"{getattr(fn, '__name__', fn)} still running after {seconds:.0f} s")
    if "error" in box:
        raise box["error"]
    return box.get("result")


# --------------------------------------------------------------------------- inputs

def _img(w: int = 24, h: int = 20, seed: int = 0) -> np.ndarray:
    y, x = np.mgrid[:h, :w]
    rng = np.random.default_rng(seed)
    return np.stack([x * 255 // w, y * 255 // h, rng.integers(0, 255, (h, w))], -1).astype(np.uint8)


def _save(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


@functools.lru_cache(maxsize=1)
def image_seeds() -> tuple[bytes, ...]:
    """Small valid files of every format and mode the reader takes: what the mutations start from."""
    from badfiles import png16_rgb

    rgb = Image.fromarray(_img())
    rgba = rgb.convert("RGBA")
    rgba.putalpha(100)
    frames = [Image.fromarray(_img(seed=s)).convert("P") for s in range(2)]
    gif = io.BytesIO()
    frames[0].save(gif, format="GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    seeds = [
        _save(rgb, "PNG"), _save(rgb.convert("L"), "PNG"), _save(rgba, "PNG"),
        _save(rgb.convert("P", palette=Image.Palette.ADAPTIVE), "PNG"), _save(rgb.convert("1"), "PNG"),
        _save(Image.fromarray(_img()[..., 0].astype(np.uint16) * 257), "PNG"),
        png16_rgb(_img().astype(np.uint16) * 257),
        _save(rgb, "JPEG", quality=80), _save(rgb, "JPEG", progressive=True), _save(rgb.convert("L"), "JPEG"),
        _save(rgb.convert("CMYK"), "JPEG"), gif.getvalue(), _save(rgb, "BMP"), _save(rgb, "WEBP"),
        _save(rgba, "WEBP", lossless=True), _save(rgb, "TIFF"), _save(rgb, "TIFF", compression="tiff_lzw"),
        _save(Image.fromarray(_img()[..., 0].astype(np.uint16) * 257), "TIFF"), _save(rgb, "PPM"),
        _save(rgb.convert("L"), "PPM"),
    ]
    return tuple(seeds)


MAGIC = [b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0", b"\xff\xd8\xff\xdb", b"GIF89a", b"GIF87a", b"BM",
         b"RIFF\x00\x01\x00\x00WEBPVP8 ", b"RIFF\x00\x01\x00\x00WEBPVP8L", b"II*\x00", b"MM\x00*", b"P6\n", b"P5\n",
         b"%!PS-Adobe-3.0 EPSF-3.0\n", b"\x00\x00\x00\x1cftypisom"]
INTERESTING = [b"\x00", b"\xff", b"\x7f", b"\x80", b"\x00\x00", b"\xff\xff", b"\x7f\xff\xff\xff", b"\xff\xff\xff\xff",
               b"\x00\x00\x00\x00", b"\x00\x00\x80\x00", b"\x00\x01\x00\x00"]


@st.composite
def mutated(draw, seeds: tuple[bytes, ...], max_ops: int = 6) -> bytes:
    """One seed file with 1..max_ops mutations: bit flips, bytes set, interesting values written (lengths,
    sizes), chunks deleted, duplicated or inserted, the file truncated; half of them in the header."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, max_ops))):
        n = len(data)
        head = draw(st.booleans())
        pos = draw(st.integers(0, max(0, min(n, 96 if head else n) - 1)))
        op = draw(st.sampled_from(["flip", "byte", "interesting", "delete", "duplicate", "insert", "truncate"]))
        if op == "flip" and n:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "byte" and n:
            data[pos] = draw(st.integers(0, 255))
        elif op == "interesting":
            v = draw(st.sampled_from(INTERESTING))
            data[pos:pos + len(v)] = v
        elif op == "delete":
            del data[pos:pos + draw(st.integers(1, 64))]
        elif op == "duplicate":
            chunk = data[pos:pos + draw(st.integers(1, 256))]
            at = draw(st.integers(0, len(data)))
            data[at:at] = chunk
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=64))
        elif op == "truncate":
            del data[pos:]
    return bytes(data)


def random_bytes(prefixes=MAGIC, max_size: int = 4096):
    """Random bytes, bare or behind a format's magic number (which sends them to that format's parser)."""
    return st.one_of(st.binary(max_size=max_size),
                     st.builds(lambda m, b: m + b, st.sampled_from(prefixes), st.binary(max_size=max_size)))


def image_bytes():
    return st.one_of(mutated(image_seeds()), corrupted(image_seeds()), random_bytes())


# --------------------------------------------------------------------------- images

def check_image(data: bytes) -> str:
    """decode_image, check_header and prepare_image: an RGB uint8 array or BadImage naming the file."""
    name = "fuzz.jpg"
    outcomes = []
    for fn in (lambda d: decode_image(d, name), lambda d: check_header(d, name), lambda d: prepare_image(d, name, 16)):
        try:
            out = within(IMAGE_TIMEOUT_S, fn, data)
        except BadImage as e:
            assert str(e).startswith(f"{name}: ") and e.problem in PROBLEMS, repr(e)
            outcomes.append(e.problem)
            continue
        if out is not None:
            assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3 and min(out.shape[:2]) >= 1
        outcomes.append("ok")
    return outcomes[0]


# --------------------------------------------------------------------------- the dataset tool

def check_dataset(files: list[bytes]) -> str:
    """`facesynth dataset` and the training reader on a folder of these files: every file converted or
    skipped for a named problem (none by the catch-all 'error'), or FacesynthError when none is readable."""
    from facesynth.data.build import build_dataset
    from facesynth.data.loader import ImageDataset

    tmp = Path(tempfile.mkdtemp(prefix="fuzz-dataset-"))
    try:
        src = tmp / "src"
        src.mkdir()
        for i, data in enumerate(files):
            (src / f"{i:03d}.{['jpg', 'png', 'webp', 'gif', 'tif'][i % 5]}").write_bytes(data)
        try:
            meta = within(IMAGE_TIMEOUT_S * len(files), build_dataset, src, tmp / "out.zip", 16, workers=1,
                          quiet=True)
        except FacesynthError as e:
            assert "none of the" in str(e), str(e)
            return "none readable"
        assert "error" not in meta["skipped_problems"], meta["skipped_files"]
        assert meta["count"] + meta["skipped"] == len(files)
        with zipfile.ZipFile(tmp / "out.zip") as zf:
            assert len(zf.namelist()) == meta["count"] + 1
        for preload in (True, False):
            ds = within(IMAGE_TIMEOUT_S * len(files), ImageDataset, src, 16, preload=preload, quiet=True)
            for k in range(len(ds)):
                assert within(IMAGE_TIMEOUT_S, ds.__getitem__, k).shape == (3, 16, 16)
        return f"{meta['count']} of {len(files)}"
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def dataset_files():
    return st.lists(st.one_of(mutated(image_seeds()), random_bytes(max_size=512), st.sampled_from(image_seeds())),
                    min_size=1, max_size=5)


# --------------------------------------------------------------------------- video

@functools.lru_cache(maxsize=1)
def video_seeds() -> tuple[bytes, ...]:
    """Two tiny clips (mp4/H.264), written by facesynth itself."""
    from facesynth.util.video import write_video

    tmp = Path(tempfile.mkdtemp(prefix="fuzz-video-seed-"))
    try:
        out = []
        for i, (w, h, n) in enumerate([(64, 48, 12), (96, 96, 6)]):
            frames = [np.roll(_img(w, h, seed=s), 3 * s, axis=1) for s in range(n)]
            write_video(frames, tmp / f"{i}.mp4", fps=10)
            out.append((tmp / f"{i}.mp4").read_bytes())
        # The index (moov) first, as clips for the web are written: a truncated one still plays its start.
        import subprocess

        import imageio_ffmpeg

        subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(tmp / "0.mp4"), "-c", "copy",
                        "-movflags", "+faststart", str(tmp / "fast.mp4")], check=True, timeout=60)
        out.append((tmp / "fast.mp4").read_bytes())
        return tuple(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@st.composite
def corrupted(draw, seeds: tuple[bytes, ...], max_ops: int = 8) -> bytes:
    """A seed with bytes changed in place anywhere (its structure, offsets and lengths kept): damaged data
    the container still points to, as a bad disk or a broken download leaves it."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, max_ops))):
        pos = draw(st.integers(0, len(data) - 1))
        if draw(st.booleans()):
            data[pos] ^= 1 << draw(st.integers(0, 7))
        else:
            v = draw(st.sampled_from(INTERESTING))
            data[pos:pos + len(v)] = v
    return bytes(data)


def video_bytes():
    return st.one_of(corrupted(video_seeds()), mutated(video_seeds(), max_ops=4), random_bytes(max_size=4096),
                     st.builds(lambda d, f: d[: int(len(d) * f)], st.sampled_from(video_seeds()),
                               st.floats(0, 1)))


_detector = None


def detector():
    global _detector
    if _detector is None:
        from facesynth.data.align import LandmarkDetector

        _detector = LandmarkDetector()
    return _detector


def check_video(data: bytes, with_faces: bool = True) -> str:
    """probe_video, read_video and prepare_clip on the bytes named .mp4: frames or FacesynthError."""
    from facesynth.data import video

    tmp = Path(tempfile.mkdtemp(prefix="fuzz-video-"))
    try:
        path = tmp / "clip.mp4"
        path.write_bytes(data)
        try:
            info = within(VIDEO_TIMEOUT_S, video.probe_video, path)
        except FacesynthError as e:
            assert "clip.mp4" in str(e), str(e)
            return "refused"
        assert info.width > 0 and info.height > 0 and info.fps > 0, info
        try:
            frames, fps = within(VIDEO_TIMEOUT_S, video.read_video, path, 30)
            assert all(f.shape == (info.height, info.width, 3) for f in frames)
        except FacesynthError as e:
            assert "clip.mp4" in str(e), str(e)
        if with_faces:
            try:
                within(VIDEO_TIMEOUT_S, video.prepare_clip, path, tmp / "out", "clip", 64, detector(), 30)
            except FacesynthError as e:
                assert "clip.mp4" in str(e) or "clip" in str(e), str(e)
        return "read"
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------- web uploads

def check_upload_functions(data: bytes) -> str:
    """uploads.decode_photo and uploads.save_video: a result or UploadError with a 4xx status."""
    from facesynth.web.uploads import UploadError, check_size, decode_photo, save_video

    outcome = "ok"
    for fn in (lambda: decode_photo(check_size(data, 10 * 2**20, "photo.jpg"), "photo.jpg"),
               lambda: save_video(check_size(data, 10 * 2**20, "clip.mp4"),
                                  Path(tempfile.mkdtemp(prefix="fuzz-upload-")) / "driver.mp4", "clip.mp4")):
        try:
            within(VIDEO_TIMEOUT_S, fn)
        except UploadError as e:
            assert 400 <= e.status < 500 and e.message, (e.status, e.message)
            outcome = str(e.status)
    return outcome


def upload_names():
    return st.one_of(st.just("photo.jpg"), st.text(max_size=40),
                     st.text(alphabet=st.characters(codec="utf-8"), max_size=300))


def check_upload_endpoint(client, data: bytes, filename: str) -> int:
    """POST /api/jobs/project: 202 (a face: a job) or a 4xx with {"detail": sentence}, never a 5xx."""
    r = within(VIDEO_TIMEOUT_S, client.post, "/api/jobs/project", files={"photo": (filename, data, "image/jpeg")})
    assert r.status_code < 500, (r.status_code, r.text[:300])
    if r.status_code != 202:
        assert 400 <= r.status_code < 500 and isinstance(r.json()["detail"], str) and r.json()["detail"], r.text
    return r.status_code


def upload_bytes():
    return st.one_of(mutated(image_seeds()), corrupted(image_seeds()), random_bytes(), corrupted(video_seeds()))


# --------------------------------------------------------------------------- checkpoints (restricted unpickler)

PICKLE_TIMEOUT_S = 10.0
FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "official"


@functools.lru_cache(maxsize=1)
def checkpoint_seeds() -> tuple[bytes, ...]:
    """Pickles of every shape `facesynth import` reads: plain pickles of tensors and arrays (protocols 2-5),
    a torch.save archive with an argparse Namespace, and NVIDIA-made files when ../shared is here."""
    import argparse
    import pickle
    from collections import OrderedDict

    import torch

    gen = torch.Generator().manual_seed(0)
    tensors = OrderedDict(w=torch.randn(4, 3, generator=gen), p=torch.nn.Parameter(torch.randn(3, generator=gen)),
                          h=torch.randn(2, generator=gen).half(), t=torch.randn(3, 2, generator=gen).t(),
                          i=torch.arange(3))
    arrays = OrderedDict(a=np.arange(6, dtype=np.float32).reshape(2, 3), b=np.float32(2),
                         c=np.asfortranarray(np.ones((2, 2))), s={"x", "y"})
    archive = io.BytesIO()
    torch.save({"w": torch.randn(3, 2, generator=gen), "args": argparse.Namespace(size=8)}, archive)
    seeds = [pickle.dumps(tensors, protocol=2), pickle.dumps(tensors, protocol=4),
             pickle.dumps(arrays, protocol=3), pickle.dumps(arrays, protocol=5), archive.getvalue()]
    seeds.append((torch.save(tensors, b := io.BytesIO(), _use_new_zipfile_serialization=False), b.getvalue())[1])
    for name in ("evil-tf-build-src.pkl", "evil-persistence-src.pkl", "evil-reduce-exec.pkl"):
        if (FIXTURES / name).is_file():
            seeds.append((FIXTURES / name).read_bytes())
    return tuple(seeds)


@functools.lru_cache(maxsize=1)
def pickle_opcodes() -> tuple[bytes, ...]:
    import pickletools

    return tuple(op.code.encode("latin-1") for op in pickletools.opcodes)


@st.composite
def spliced_opcodes(draw, seeds: tuple[bytes, ...]) -> bytes:
    """A seed pickle with 1-6 random opcodes (and random argument bytes) spliced in somewhere."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 6))):
        at = draw(st.integers(0, len(data)))
        data[at:at] = draw(st.sampled_from(pickle_opcodes())) + draw(st.binary(max_size=8))
    return bytes(data)


def checkpoint_bytes():
    seeds = checkpoint_seeds()
    return st.one_of(mutated(seeds), spliced_opcodes(seeds),
                     random_bytes([b"\x80\x02", b"\x80\x04", b"\x80\x05", b"PK\x03\x04"], max_size=512))


def check_checkpoint(data: bytes) -> str:
    """read_pickle: a value or one FacesynthError line naming the file, within PICKLE_TIMEOUT_S."""
    from facesynth.importers.safe_pickle import read_pickle

    folder = Path(tempfile.mkdtemp(prefix="fuzz-pickle-"))
    path = folder / "model.pkl"
    path.write_bytes(data)
    try:
        value = within(PICKLE_TIMEOUT_S, read_pickle, path)
        return f"ok {type(value).__name__}"
    except FacesynthError as e:
        text = str(e)
        assert text.startswith(f"{path}: ") and "\n" not in text, text
        return "refused" if ": refused: " in text else "unreadable"
    finally:
        shutil.rmtree(folder, ignore_errors=True)
