import io
import json
import zipfile

import numpy as np
import pytest
from PIL import Image

from facesynth.data.build import build_dataset
from facesynth.data.images import decode_image, to_square
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
