import io
import json
import time
import zipfile

import numpy as np
import pytest
from PIL import Image

from facesynth.cli import main
from facesynth.data.build import build_dataset
from facesynth.data import images
from facesynth.data.images import ImageSource, decode_image, to_square
from facesynth.data.loader import EpochSampler, ImageDataset
from facesynth.errors import FacesynthError


def _gradient(w=40, h=30):
    y, x = np.mgrid[:h, :w]
    return np.stack([x * 255 // w, y * 255 // h, np.full_like(x, 128)], -1).astype(np.uint8)


@pytest.fixture
def mixed_folder(tmp_path):
    """One good file of every awkward kind, plus the broken ones the tool must skip."""
    src = tmp_path / "src"
    (src / "nested").mkdir(parents=True)
    rgb = Image.fromarray(_gradient())
    rgb.save(src / "rgb.png")
    rgb.convert("L").save(src / "grey.png")
    rgb.convert("CMYK").save(src / "cmyk.jpg")
    rgba = rgb.convert("RGBA")
    rgba.putalpha(128)
    rgba.save(src / "nested" / "rgba.png")
    rgb.convert("P", palette=Image.Palette.ADAPTIVE).save(src / "palette.png")
    Image.fromarray((_gradient()[..., 0].astype(np.uint16) * 257)).save(src / "sixteen.png")
    buf = io.BytesIO()
    rgb.save(buf, format="JPEG")
    (src / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (src / "text.jpg").write_text("this is not an image")
    (src / "empty.png").write_bytes(b"")
    (src / "notes.txt").write_text("ignored: not an image extension")
    return src


def test_dataset_tool_converts_every_kind_and_skips_broken_files(mixed_folder, tmp_path, capsys):
    dest = tmp_path / "out.zip"
    meta = build_dataset(mixed_folder, dest, 16, quiet=True)
    assert meta["count"] == 6 and meta["skipped"] == 3 and meta["resolution"] == 16
    assert {f["name"]: f["problem"] for f in meta["skipped_files"]} == {
        "truncated.jpg": "truncated", "text.jpg": "not_an_image", "empty.png": "empty"}
    assert meta["skipped_problems"] == {"truncated": 1, "not_an_image": 1, "empty": 1}
    with zipfile.ZipFile(dest) as zf:
        stored = json.loads(zf.read("dataset.json"))
        assert stored == meta
        pngs = [n for n in zf.namelist() if n.endswith(".png")]
        assert len(pngs) == 6
        for n in pngs:
            im = Image.open(io.BytesIO(zf.read(n)))
            assert im.mode == "RGB" and im.size == (16, 16)


def test_sixteen_bit_images_keep_their_range():
    arr16 = (np.linspace(0, 65535, 64).reshape(8, 8)).astype(np.uint16)
    buf = io.BytesIO()
    Image.fromarray(arr16).save(buf, format="PNG")
    out = decode_image(buf.getvalue())
    assert out.dtype == np.uint8 and out.shape == (8, 8, 3)
    assert out.min() == 0 and out.max() == 255


def test_rgba_is_composited_not_truncated():
    rgba = np.zeros((4, 4, 4), np.uint8)  # fully transparent black
    buf = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buf, format="PNG")
    assert decode_image(buf.getvalue()).min() == 255  # shows the white background


def test_crop_and_pad_make_squares():
    img = _gradient(40, 30)
    assert to_square(img, "crop").shape == (30, 30, 3)
    padded = to_square(img, "pad")
    assert padded.shape == (40, 40, 3) and padded[0].max() == 0


def test_numpy_arrays_are_a_source(tmp_path):
    arr = np.random.default_rng(0).integers(0, 255, (5, 3, 20, 20), dtype=np.uint8)  # NCHW
    np.save(tmp_path / "a.npy", arr)
    np.savez(tmp_path / "b.npz", images=arr.transpose(0, 2, 3, 1).astype(np.float32) / 255)
    for name in ("a.npy", "b.npz"):
        meta = build_dataset(tmp_path / name, tmp_path / f"{name}.zip", 8, quiet=True)
        assert meta["count"] == 5


def test_pickled_npy_is_refused(tmp_path):
    obj = np.array([{"a": 1}], dtype=object)
    np.save(tmp_path / "evil.npy", obj, allow_pickle=True)
    with pytest.raises(FacesynthError, match="evil.npy"):
        build_dataset(tmp_path / "evil.npy", tmp_path / "o.zip", 8, quiet=True)


def _npy_header(shape, descr="|u1") -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
    return buf.getvalue()


# (file, shape, dtype, bytes of data behind the header, what the one line says)
LYING_ARRAYS = [
    ("huge.npy", (100000, 1024, 1024, 3), "|u1", 100, "huge.npy: its header declares shape [100000, 1024, 1024, 3] of "
     "uint8 (293.0 GiB), but the file holds 100 bytes of data: damaged or not an image array"),
    ("huge.npz", (100000, 1024, 1024, 3), "|u1", 100, "huge.npz: its header declares shape [100000, 1024, 1024, 3] of "
     "uint8 (293.0 GiB), but the file holds 100 bytes of data: damaged or not an image array"),
    ("wide.npy", (1, 9000, 9000), "|u1", 81_000_000, "wide.npy: shape [1, 9000, 9000] declares images of 9000x9000 "
     "pixels, over the 8192x8192 pixels limit"),
    ("many.npy", (40, 4, 4), "|u1", 640, "many.npy: shape [40, 4, 4] declares 40 images, over the 20 one array "
     "may hold"),  # with MAX_ARRAY_IMAGES at 20: 10 million 2x2 images would take minutes to skip one by one
    ("words.npy", (4, 8, 8, 3), "<U4", 4 * 8 * 8 * 3 * 16, "words.npy: the array holds <U4 values, not pixel values"),
]


@pytest.mark.parametrize("name, shape, descr, data, message", LYING_ARRAYS, ids=[a[0] for a in LYING_ARRAYS])
def test_array_headers_are_checked_before_their_data_is_read(tmp_path, capsys, monkeypatch, name, shape, descr, data,
                                                             message):
    """QA (issue 23): a .npy declaring 100000x1024x1024x3 ended `dataset` with NumPy's "Unable to allocate
    293 GiB" traceback."""
    monkeypatch.setattr(images, "MAX_ARRAY_IMAGES", 20, raising=False)
    path = tmp_path / name
    header = _npy_header(shape, descr)
    if name.endswith(".npz"):
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("images.npy", header + bytes(data))
    else:
        with open(path, "wb") as f:  # sparse: the data is a hole
            f.write(header)
            f.truncate(len(header) + data)
    t = time.perf_counter()
    assert main(["dataset", str(path), str(tmp_path / "o.zip"), "--resolution", "16"]) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [f"facesynth dataset: error: {tmp_path / message}"]
    with pytest.raises(FacesynthError) as e:  # what `train --data` reads through
        ImageDataset(path, 16, quiet=True)
    assert str(e.value) == str(tmp_path / message)
    assert time.perf_counter() - t < 2.0 and not (tmp_path / "o.zip").exists()


def test_a_npz_too_large_for_memory_is_refused_before_decompressing(tmp_path, monkeypatch):
    np.savez_compressed(tmp_path / "big.npz", images=np.zeros((4, 8, 8, 3), np.uint8))  # 768 bytes once inflated
    monkeypatch.setattr(images, "_memory_bytes", lambda: 1000)
    with pytest.raises(FacesynthError, match=r"big.npz: its array of shape \[4, 8, 8, 3\] takes 768 bytes once "
                       r"decompressed, over half of this machine's 1000 bytes of memory: save it with np.save as "
                       r".npy, which is read from disk as needed$"):
        ImageSource(tmp_path / "big.npz")


def test_a_npy_is_read_from_disk_as_needed(tmp_path):
    arr = np.random.default_rng(1).integers(0, 255, (3, 20, 20), dtype=np.uint8)
    np.save(tmp_path / "a.npy", arr)
    source = ImageSource(tmp_path / "a.npy")
    assert isinstance(source._array, np.memmap) and source.read(2).shape == (20, 20, 1)
    assert np.array_equal(decode_image(source.read(2))[..., 0], arr[2])


def test_an_empty_source_or_destination_is_refused_not_the_current_folder(tmp_path, monkeypatch):
    """QA (issue 23): `dataset "" x.zip` read the current folder (Path("") is "."), recursively."""
    work = tmp_path / "cwd"
    work.mkdir()
    Image.fromarray(_gradient()).save(work / "face.png")
    monkeypatch.chdir(work)
    dest = tmp_path / "o.zip"
    with pytest.raises(FacesynthError, match="^the source path is empty: name a file or folder$"):
        build_dataset("", dest, 16, quiet=True)
    with pytest.raises(FacesynthError, match="^the destination path is empty: name a file or folder$"):
        build_dataset(work, "", 16, quiet=True)
    with pytest.raises(FacesynthError, match="^the data path is empty: name a file or folder$"):
        ImageDataset("", 16, quiet=True)  # `train --data ""`
    assert not dest.exists() and sorted(p.name for p in work.iterdir()) == ["face.png"]


@pytest.mark.parametrize("res", [0, 3, 48, 100])
def test_resolution_must_be_a_power_of_two(mixed_folder, tmp_path, res):
    with pytest.raises(FacesynthError, match="power of two"):
        build_dataset(mixed_folder, tmp_path / "o.zip", res, quiet=True)


def test_missing_empty_and_broken_sources_are_clear_errors(tmp_path):
    with pytest.raises(FacesynthError, match="no such file"):
        build_dataset(tmp_path / "nope", tmp_path / "o.zip", 16, quiet=True)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FacesynthError, match="no images found"):
        build_dataset(tmp_path / "empty", tmp_path / "o.zip", 16, quiet=True)
    (tmp_path / "bad.zip").write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(FacesynthError, match="bad.zip: not a readable zip"):
        build_dataset(tmp_path / "bad.zip", tmp_path / "o.zip", 16, quiet=True)


def test_failed_build_leaves_the_previous_output_intact(tmp_path, mixed_folder):
    dest = tmp_path / "out.zip"
    build_dataset(mixed_folder, dest, 16, quiet=True)
    before = dest.read_bytes()
    only_bad = tmp_path / "only_bad"
    only_bad.mkdir()
    (only_bad / "x.jpg").write_text("nope")
    with pytest.raises(FacesynthError, match="none of the 1 files"):
        build_dataset(only_bad, dest, 16, quiet=True)
    assert dest.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_training_reads_raw_folders_and_built_zips(mixed_folder, tmp_path):
    raw = ImageDataset(mixed_folder, 8, quiet=True)
    assert len(raw) == 6 and len(raw.bad) == 3
    assert raw[0].shape == (3, 8, 8)
    build_dataset(mixed_folder, tmp_path / "d.zip", 8, quiet=True)
    lazy = ImageDataset(tmp_path / "d.zip", 8, preload=False, quiet=True)
    eager = ImageDataset(tmp_path / "d.zip", 8, preload=True, quiet=True)
    assert all((lazy[i] == eager[i]).all() for i in range(len(eager)))


def test_sampler_resumes_mid_epoch():
    full = EpochSampler(10, seed=1)
    it = iter(full)
    seq = [next(it) for _ in range(25)]
    it2 = iter(EpochSampler(10, seed=1, start=13))
    assert [next(it2) for _ in range(12)] == seq[13:]
    assert sorted(seq[:10]) == list(range(10)) and seq[:10] != seq[10:20]


@pytest.mark.realdata
def test_utkface_builds(utkface_zip, tmp_path):
    meta = build_dataset(utkface_zip, tmp_path / "u.zip", 32, max_images=200, quiet=True)
    assert meta["count"] == 200 and meta["skipped"] == 0
