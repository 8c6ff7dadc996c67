"""Corrupt and awkward files never stop the dataset tool or training: every kind of bad file (tests/badfiles.py)
is converted when it is a valid image and skipped otherwise, reported once, and counted per problem."""

from __future__ import annotations

import io
import json
import os
import pickle
import re
import resource
import time
import zipfile

import numpy as np
import pytest
from badfiles import (KINDS, bad_files, bomb_png, expected_problems, inject_bad_files, make_file, picture, png16_rgb,
                      sparse_file, zip_of_zeros)
from PIL import Image, ImageFile

from facesynth.cli import main
from facesynth.data.build import build_dataset
from facesynth.data.images import BadImage, check_header, decode_image, prepare_image
from facesynth.data.loader import ImageDataset, batch_iterator

GiB = 2**30


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


# --------------------------------------------------------------------------- bounded reading

def in_child(fn):
    """``fn()`` run in a forked process: its result, and how far that process's peak resident memory rose above
    its size at the fork.  A child, because ru_maxrss only ever grows: here it would hold every earlier test's
    peak.  The child may map only 1 GiB more than it had, so a reader that inflates a bomb fails in a second
    instead of filling the machine."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            os.close(r)
            with open("/proc/self/statm") as f:
                mapped = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
            hard = resource.getrlimit(resource.RLIMIT_AS)[1]
            cap = mapped + GiB if hard == resource.RLIM_INFINITY else min(mapped + GiB, hard)
            resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
            before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            try:
                out = ("ok", fn())
            except BaseException as e:  # noqa: BLE001 - reported to the parent, which fails the test
                out = ("raised", f"{type(e).__name__}: {e}")
            grew = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024
            with os.fdopen(w, "wb") as f:
                pickle.dump((out, grew), f)
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    os.waitpid(pid, 0)
    (status, value), grew = pickle.loads(data)
    assert status == "ok", value
    return value, grew


def _png(rng, w=40, h=48) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(picture(rng, w, h)).save(buf, format="PNG")
    return buf.getvalue()


def _gigabyte_files(tmp_path, kind):
    """One good image, ``bomb.png``: gigabytes of zeros, and ``tail.png``: a real PNG followed by gigabytes of
    zeros; in a 3 MB zip whose members inflate to 3 GiB each, or as 2 GiB sparse files in a folder."""
    good = _png(np.random.default_rng(5))
    if kind == "zip":
        src = tmp_path / "src.zip"
        zip_of_zeros(src, {"good.png": (good, 0), "bomb.png": (b"", 3 * GiB), "tail.png": (good, 3 * GiB)})
        assert src.stat().st_size < 8 * 2**20
    else:
        src = tmp_path / "src"
        src.mkdir()
        (src / "good.png").write_bytes(good)
        sparse_file(src / "bomb.png", b"", 2 * GiB)
        sparse_file(src / "tail.png", good, 2 * GiB)
    return src


@pytest.mark.parametrize("reader", ["dataset", "train", "train on the fly"])
@pytest.mark.parametrize("kind", ["zip", "folder"])
def test_gigabytes_of_zeros_cost_their_first_bytes_not_gigabytes(tmp_path, kind, reader):
    """QA (issue 23): a 3 MB zip holding a 3 GiB bomb.png of zeros took 6.3 GB and 64 s to say "not an image"."""
    src = _gigabyte_files(tmp_path, kind)

    def run():
        t = time.perf_counter()
        if reader == "dataset":
            meta = build_dataset(src, tmp_path / "out.zip", 16, workers=2, quiet=True)
            found = meta["count"], meta["skipped_problems"], {f["name"]: f["message"] for f in meta["skipped_files"]}
        else:
            ds = ImageDataset(src, 16, preload=reader == "train", quiet=True)
            found = len(ds), dict(ds.bad_problems), {m.split(":")[0]: m for m in ds.bad}
        return found, time.perf_counter() - t

    (found, seconds), grew = in_child(run)
    count, problems, messages = found
    assert count == 1 and problems == {"not_an_image": 1, "too_large": 1}, messages
    assert messages["bomb.png"].startswith("bomb.png: not an image")
    size = "3.0 GiB" if kind == "zip" else "2.0 GiB"
    assert messages["tail.png"] == (f"tail.png: file too large ({size}; an image within 8192x8192 pixels takes at "
                                    "most 576 MiB), refused unread")
    assert grew < 64 * 2**20, f"{grew / 2**20:.0f} MiB"
    assert seconds < 5.0


def test_images_larger_than_the_first_bytes_checked_are_read_whole(tmp_path):
    from facesynth.data.images import HEAD_BYTES, MAX_FILE_BYTES, ImageSource

    noise = np.random.default_rng(6).integers(0, 256, (300, 300, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noise).save(buf, format="PNG")
    big = buf.getvalue()
    assert len(big) > 2 * HEAD_BYTES and MAX_FILE_BYTES == 8 * 8192 * 8192 + 64 * 2**20
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "big.png").write_bytes(big)
    with zipfile.ZipFile(tmp_path / "src.zip", "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("big.png", big)
    for src in (tmp_path / "src", tmp_path / "src.zip"):
        source = ImageSource(src)
        assert source.read(0) == big and np.array_equal(decode_image(source.read(0)), noise)


# --------------------------------------------------------------------------- names and links

ODD_NAMES = ["two\nlines.jpg", "red\x1b[31m.jpg", "back\u202egpj.png", "bell\a.gif"]


@pytest.mark.parametrize("reader", ["dataset", "train"])
def test_names_with_newlines_and_escapes_are_quoted_in_messages(tmp_path, capsys, reader):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(2):
        (src / f"good{i}.png").write_bytes(_png(np.random.default_rng(i)))
    for name in ODD_NAMES:
        (src / name).write_text("notes, not a photo")
    if reader == "dataset":
        assert main(["dataset", str(src), str(tmp_path / "out.zip"), "--resolution", "16", "--quiet"]) == 0
        with zipfile.ZipFile(tmp_path / "out.zip") as zf:
            meta = json.loads(zf.read("dataset.json"))
        assert {f["name"] for f in meta["skipped_files"]} == set(ODD_NAMES)  # the real names, JSON-escaped
    else:
        assert len(ImageDataset(src, 16, quiet=True)) == 2
    err = capsys.readouterr().err
    assert not any(c in err for c in "\x1b\u202e\a"), err
    lines = _skip_lines(err)
    assert len(lines) == len(ODD_NAMES) == len(err.strip().splitlines())
    for name in ODD_NAMES:
        assert sum(ln.startswith(f"skipped {name!r}: not an image") for ln in lines) == 1, (name, lines)


def test_links_out_of_the_folder_are_skipped_and_links_within_it_read_once(tmp_path, capsys):
    """QA (issue 23): a link to /etc/passwd in a source folder was opened and reported."""
    outside = tmp_path / "private"
    outside.mkdir()
    (outside / "secret.png").write_bytes(_png(np.random.default_rng(7)))
    (outside / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.png").write_bytes(_png(np.random.default_rng(8)))
    (src / "sub" / "b.png").write_bytes(_png(np.random.default_rng(9)))
    (src / "raw.dat").write_bytes(_png(np.random.default_rng(10)))  # an image under a name not read as one
    (src / "passwd.jpg").symlink_to(outside / "passwd")
    (src / "secret.png").symlink_to("../private/secret.png")
    (src / "more").symlink_to(outside, target_is_directory=True)
    (src / "again.png").symlink_to(src / "a.png")  # within: a.png is read once
    (src / "sub" / "up.png").symlink_to("../sub/b.png")
    (src / "alias.png").symlink_to("raw.dat")  # within, and read only through the link
    (src / "loop").symlink_to(".", target_is_directory=True)
    (src / "self.png").symlink_to("self.png")  # a loop: not listed, and no crash
    (src / "gone.jpg").symlink_to("../private/gone.jpg")  # dangling, and outside
    meta = build_dataset(src, tmp_path / "out.zip", 16, quiet=True)
    outside_links = {"passwd.jpg", "secret.png", "more", "gone.jpg"}
    assert meta["count"] == 3 and meta["skipped_problems"] == {"link_outside": 4}
    assert {f["name"]: f["message"] for f in meta["skipped_files"]} == {
        n: f"{n}: a link to outside the folder" for n in outside_links}
    assert sorted(_skip_lines(capsys.readouterr().err)) == sorted(
        f"skipped {n}: a link to outside the folder" for n in outside_links)
    ds = ImageDataset(src, 16, quiet=True)
    assert len(ds) == 3 and ds.bad_problems == {"link_outside": 4}


def test_a_damaged_zip_member_is_skipped_not_a_crash(tmp_path):
    rng = np.random.default_rng(11)
    good, damaged = _png(rng), bytearray(_png(rng))
    with zipfile.ZipFile(tmp_path / "src.zip", "w") as zf:  # stored: the member's bytes lie in the zip as they are
        zf.writestr("good.png", good)
        zf.writestr("damaged.png", bytes(damaged))
    data = bytearray((tmp_path / "src.zip").read_bytes())
    at = data.index(bytes(damaged)) + len(damaged) // 2
    data[at] ^= 0xFF  # the checksum no longer matches
    (tmp_path / "src.zip").write_bytes(bytes(data))
    meta = build_dataset(tmp_path / "src.zip", tmp_path / "out.zip", 16, quiet=True)
    assert meta["count"] == 1 and meta["skipped_problems"] == {"corrupt": 1}
    assert meta["skipped_files"][0]["message"].startswith("damaged.png: damaged zip member (Bad CRC-32")
    ds = ImageDataset(tmp_path / "src.zip", 16, preload=True, quiet=True)
    assert len(ds) == 1 and ds.bad_problems == {"corrupt": 1}
