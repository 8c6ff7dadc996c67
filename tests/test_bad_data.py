"""Corrupt and awkward files never stop the dataset tool or training: every kind of bad file (tests/badfiles.py)
is converted when it is a valid image and skipped otherwise, reported once, and counted per problem."""

from __future__ import annotations

import io
import json
import re
import time
import zipfile

import numpy as np
import pytest
from badfiles import KINDS, bad_files, bomb_png, expected_problems, inject_bad_files, make_file, picture, png16_rgb
from PIL import Image, ImageFile

from facesynth.cli import main
from facesynth.data.images import BadImage, check_header, decode_image, prepare_image
from facesynth.data.loader import ImageDataset, batch_iterator


@pytest.mark.parametrize("kind", list(KINDS))
def test_each_kind_is_converted_or_skipped_for_its_problem(kind):
    data = make_file(kind, np.random.default_rng(1))
    problem = KINDS[kind][1]
    if problem is None:
        out = prepare_image(data, kind, 16)
        assert out.shape == (16, 16, 3) and out.dtype == np.uint8 and 20 < out.mean() < 235
    else:
        with pytest.raises(BadImage, match=f"^{kind}: ") as e:
            prepare_image(data, kind, 16)
        assert e.value.problem == problem


# Found by benchmarks/fuzz.py: a TIFF whose strip offsets are stored as text made PIL raise TypeError.
TIFF_WITH_TEXT_OFFSETS = (b'II\x00*\x08\x00\x00\x00\x00\x01\x00\x01\x04\x00\x01\x00\x00\x00\x00\x00\x00'
                          b'\x01\x01\x01\x03\x00\x01\x00\x00\x00\x01'
                          + b"\x00" * 39 + b'\x11\x01\x02\x00\x01\x00\x00\x00\x00\x00\x00\x00')


def test_decoder_failures_of_any_kind_are_a_corrupt_file():
    with pytest.raises(BadImage, match="odd.tif: corrupt") as err:
        decode_image(TIFF_WITH_TEXT_OFFSETS, "odd.tif")
    assert err.value.problem == "corrupt"


def test_sixteen_bit_rgb_and_grey_are_scaled_not_clipped():
    img = picture(np.random.default_rng(2), 24, 16)
    assert np.array_equal(decode_image(png16_rgb(img.astype(np.uint16) * 257)), img)
    buf = io.BytesIO()
    Image.fromarray(img[..., 1].astype(np.uint16) * 257).save(buf, format="PNG")
    assert Image.open(io.BytesIO(buf.getvalue())).mode == "I;16"
    assert np.array_equal(decode_image(buf.getvalue())[..., 0], img[..., 1])


def test_a_decompression_bomb_is_refused_from_its_header(monkeypatch):
    data = bomb_png()
    with monkeypatch.context() as m:
        m.setattr(Image, "MAX_IMAGE_PIXELS", None)
        assert len(data) < 2 * 2**20 and Image.open(io.BytesIO(data)).size == (20000, 20000)

    def no_decoding(self):
        raise AssertionError("the bomb was decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    t = time.perf_counter()
    for check in (decode_image, check_header):
        with pytest.raises(BadImage, match="bomb.png: image too large .400000000 pixels declared") as e:
            check(data, "bomb.png")
        assert e.value.problem == "too_large"
    assert time.perf_counter() - t < 1.0


def test_formats_that_run_programs_are_not_opened():
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n"
    with pytest.raises(BadImage, match="not an image") as e:
        decode_image(eps, "x.jpg")
    assert e.value.problem == "not_an_image"


def _skip_lines(err: str) -> list[str]:
    return [ln for ln in err.splitlines() if ln.startswith("skipped ")]


def _good_and_bad(folder, n_good=12, n_bad=2 * len(KINDS)):
    folder.mkdir()
    rng = np.random.default_rng(3)
    for i in range(n_good):
        Image.fromarray(picture(rng, 40, 48)).save(folder / f"{i:02d}_good.jpg")
    bad = bad_files(n_bad, seed=4)
    for name, (_, data) in bad.items():
        (folder / name).write_bytes(data)
    return bad


def test_dataset_tool_skips_and_reports_each_bad_file_once(tmp_path, capsys):
    bad = _good_and_bad(tmp_path / "src")
    dest = tmp_path / "out.zip"
    assert main(["dataset", str(tmp_path / "src"), str(dest), "--resolution", "16"]) == 0
    lines = _skip_lines(capsys.readouterr().err)
    skipped = {n for n, (kind, _) in bad.items() if KINDS[kind][1]}
    assert len(lines) == len(skipped)
    for name in skipped:
        assert sum(name in ln for ln in lines) == 1, name
    with zipfile.ZipFile(dest) as zf:
        meta = json.loads(zf.read("dataset.json"))
        assert len([n for n in zf.namelist() if n.endswith(".png")]) == meta["count"]
    assert meta["count"] == 12 + len(bad) - len(skipped)
    assert meta["skipped"] == len(skipped) and meta["skipped_problems"] == expected_problems(bad)
    assert {f["name"] for f in meta["skipped_files"]} == skipped
    assert all(f["problem"] == KINDS[bad[f["name"]][0]][1] and f["message"].startswith(f["name"] + ": ")
               for f in meta["skipped_files"])


@pytest.mark.parametrize("preload", [True, False], ids=["preloaded", "on-the-fly"])
def test_training_data_skips_and_reports_each_bad_file_once(tmp_path, capfd, preload):
    bad = _good_and_bad(tmp_path / "src")
    skipped = {n for n, (kind, _) in bad.items() if KINDS[kind][1]}
    src = tmp_path / "src"
    if not preload:  # a zip, read first in this process, then by forked workers
        with zipfile.ZipFile(tmp_path / "src.zip", "w") as zf:
            for f in sorted(src.iterdir()):
                zf.write(f, f.name)
        src = tmp_path / "src.zip"
    ds = ImageDataset(src, 16, preload=preload, quiet=True)
    if preload:
        assert len(ds) == 12 + len(bad) - len(skipped) and ds.bad_problems == expected_problems(bad)
    else:  # the header check finds all but (some of) the truncated files; decoding finds the rest, once
        headers = {k: v for k, v in expected_problems(bad).items() if k != "truncated"}
        assert {k: v for k, v in ds.bad_problems.items() if k != "truncated"} == headers
        assert ds.skipped < len(skipped)
        assert ds[0].shape == (3, 16, 16)  # the zip is open in this process before the workers fork
        batches = batch_iterator(ds, 8, seed=0, workers=2)
        for _ in range(3 * len(ds) // 8):  # three epochs
            assert next(batches).shape == (8, 3, 16, 16)
        del batches
        assert ds.skipped == len(skipped)
    lines = _skip_lines(capfd.readouterr().err)
    for name in skipped:
        assert sum(name in ln for ln in lines) == 1, (name, lines)
    assert len(lines) == len(skipped)


def test_train_command_on_a_folder_with_bad_files(tmp_path, capsys):
    bad = _good_and_bad(tmp_path / "src", n_good=24)
    skipped = {n for n, (kind, _) in bad.items() if KINDS[kind][1]}
    out = tmp_path / "run"
    assert main(["train", "--data", str(tmp_path / "src"), "--out", str(out), "--preset", "tiny",
                 "--kimg", "0.016", "--quiet"]) == 0
    lines = _skip_lines(capsys.readouterr().err)
    assert len(lines) == len(skipped) and all(sum(n in ln for ln in lines) == 1 for n in skipped)
    options = json.loads((out / "training_options.json").read_text())
    assert options["dataset"]["skipped"] == len(skipped)
    assert options["dataset"]["images"] == 24 + len(bad) - len(skipped)


@pytest.mark.realdata
@pytest.mark.slow
def test_utkface_with_one_percent_bad_files(utkface_zip, tmp_path, capsys):
    """The real scale: 21,317 photos plus ~1% bad files, through `dataset` at 32² and a short `train`."""
    t0 = time.perf_counter()
    dirty = tmp_path / "dirty.zip"
    bad = inject_bad_files(utkface_zip, dirty, fraction=0.01)
    t_inject = time.perf_counter() - t0
    skipped = {n for n, (kind, _) in bad.items() if KINDS[kind][1]}

    t0 = time.perf_counter()
    assert main(["dataset", str(dirty), str(tmp_path / "u32.zip"), "--resolution", "32", "--workers", "2"]) == 0
    t_dataset = time.perf_counter() - t0
    lines = _skip_lines(capsys.readouterr().err)
    with zipfile.ZipFile(tmp_path / "u32.zip") as zf:
        meta = json.loads(zf.read("dataset.json"))
    assert meta["skipped_problems"] == expected_problems(bad) and meta["count"] == 21317 + len(bad) - len(skipped)
    assert len(lines) == len(skipped) and {re.match(r"skipped (.+?): ", ln).group(1) for ln in lines} == skipped

    t0 = time.perf_counter()
    out = tmp_path / "run"
    assert main(["train", "--data", str(dirty), "--out", str(out), "--preset", "stylegan2-32-cpu", "--kimg", "0.1",
                 "--quiet", "--snap", "0.1"]) == 0
    t_train = time.perf_counter() - t0
    lines = _skip_lines(capsys.readouterr().err)
    assert len(lines) == len(skipped)
    options = json.loads((out / "training_options.json").read_text())
    assert options["dataset"]["skipped"] == len(skipped)
    print(f"\nutkface+{len(bad)} bad: inject {t_inject:.1f}s, dataset 32² {t_dataset:.1f}s, "
          f"train 0.1 kimg {t_train:.1f}s; skipped {meta['skipped_problems']}")
