"""Content Credentials, the invisible watermark and `facesynth detect`: every output says it was made here."""

from __future__ import annotations

import io
import json
import os
import stat

import numpy as np
import pytest
from PIL import Image

from facesynth.cli import main
from facesynth.errors import FacesynthError
from facesynth.provenance import for_model, keys, watermark
from facesynth.provenance.detect import detect_file
from facesynth.models import default_model
from facesynth.util.grid import save_png

pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")


@pytest.fixture(autouse=True)
def own_config(tmp_path_factory, monkeypatch):
    """A signing key of the tests' own (made once), marking on, no user certificate."""
    monkeypatch.setenv(keys.CONFIG_ENV, str(tmp_path_factory.getbasetemp() / "facesynth-config"))
    monkeypatch.setenv("FACESYNTH_NO_MARK", "")
    for name in (keys.CERT_ENV, keys.KEY_ENV, keys.TRUST_ENV):
        monkeypatch.delenv(name, raising=False)


def face_like(side: int, seed: int = 0) -> np.ndarray:
    """Smooth shapes and a little grain: a stand-in for a face's spectrum without a model."""
    rng = np.random.default_rng(seed)
    small = rng.uniform(40, 220, (6, 6, 3)).astype(np.uint8)
    img = np.asarray(Image.fromarray(small).resize((side, side), Image.BICUBIC)).astype(np.float64)
    return np.clip(img + rng.normal(0, 4, img.shape), 0, 255).astype(np.uint8)


def jpeg(pixels: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(buf).convert("RGB"))


@pytest.mark.parametrize("side", [64, 256])
def test_watermark_round_trip(side):
    img = face_like(side)
    marked = watermark.embed(img, 0xBEEF)
    reading = watermark.read(marked)
    assert reading.found and reading.model_id == 0xBEEF and reading.hypothesis == "as is"
    assert not watermark.read(img).found
    # What strips metadata: re-compression and a smaller copy.
    again = watermark.read(jpeg(np.asarray(Image.fromarray(marked).resize((side // 2, side // 2))), 75))
    assert again.found and again.model_id == 0xBEEF


def test_watermark_after_a_crop():
    marked = watermark.embed(face_like(256, 1), 0x1234)
    reading = watermark.read(marked[:243, :243])
    assert reading.found and reading.model_id == 0x1234 and reading.hypothesis.startswith("crop")


def test_local_key_is_made_once_and_private(tmp_path, monkeypatch):
    monkeypatch.setenv(keys.CONFIG_ENV, str(tmp_path / "cfg"))
    first = keys.signing_key()
    assert first.local and first.algorithm == "ES256"
    key_file = tmp_path / "cfg" / keys.FOLDER / keys.KEY_FILE
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert keys.signing_key().key_pem == first.key_pem  # kept, not made again
    assert b"BEGIN CERTIFICATE" in keys.trust_anchors()


def test_own_certificate_needs_both_halves(monkeypatch, tmp_path):
    monkeypatch.setenv(keys.CERT_ENV, str(tmp_path / "chain.pem"))
    with pytest.raises(FacesynthError, match="set both"):
        keys.signing_key()
    monkeypatch.setenv(keys.KEY_ENV, str(tmp_path / "missing.pem"))
    with pytest.raises(FacesynthError, match="missing.pem"):
        keys.signing_key()


def test_marked_png_states_how_it_was_made(tmp_path):
    mark = for_model(default_model(), seed=7, psi=0.7)
    save_png(face_like(64), tmp_path / "f.png", mark)
    report = detect_file(tmp_path / "f.png")
    cc = report["content_credentials"]
    assert report["marked"] and cc["valid"] and cc["trusted"]
    assert cc["claims"]["digital_source_type"] == "trainedAlgorithmicMedia"
    assert cc["claims"]["model_sha256"] == mark.model_sha256
    assert cc["claims"]["parameters"] == {"seed": 7, "psi": 0.7}
    assert report["watermark"]["found"] and report["watermark"]["matches_credentials"]


def _chunks(png: bytes) -> list[tuple[bytes, bytes]]:
    """(type, whole chunk) of each PNG chunk."""
    out, i = [], 8
    while i < len(png):
        n = int.from_bytes(png[i:i + 4], "big")
        out.append((png[i + 4:i + 8], png[i:i + 12 + n]))
        i += 12 + n
    return out


def test_changed_pixels_break_the_credentials(tmp_path):
    pixels = face_like(64)
    save_png(pixels, tmp_path / "f.png", for_model(default_model()))
    signed_png = (tmp_path / "f.png").read_bytes()
    with Image.open(tmp_path / "f.png") as im:
        changed = np.asarray(im.convert("RGB")).copy()
    changed[10, 10] ^= 1  # one pixel, one level
    buf = io.BytesIO()
    Image.fromarray(changed).save(buf, format="PNG")
    # The signed file's manifest around the new pixels, as someone editing a picture and keeping its metadata.
    kept = [c for t, c in _chunks(signed_png) if t != b"IDAT" and t != b"IEND"]
    new = [c for t, c in _chunks(buf.getvalue()) if t in (b"IDAT", b"IEND")]
    (tmp_path / "g.png").write_bytes(signed_png[:8] + b"".join(kept + new))
    cc = detect_file(tmp_path / "g.png")["content_credentials"]
    assert cc["present"] and not cc["valid"]


def test_generate_is_marked_and_detect_says_so(tmp_path, capsys):
    out = tmp_path / "faces"
    assert main(["generate", "--seeds", "3-4", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["detect", str(out / "seed0003.png"), str(out / "seed0004.png")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and all("made by facesynth" in line and "seed " in line for line in lines)
    assert main(["detect", "--json", str(out / "seed0003.png")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["watermark"]["found"] and report["content_credentials"]["claims"]["parameters"]["seed"] == 3


def test_stripped_copy_is_still_found_by_its_watermark(tmp_path, capsys):
    assert main(["generate", "--seeds", "5", "--out", str(tmp_path / "f")]) == 0
    with Image.open(tmp_path / "f" / "seed0005.png") as im:
        im.convert("RGB").save(tmp_path / "copy.jpg", quality=85)  # no credentials survive this
    capsys.readouterr()
    assert main(["detect", "--json", str(tmp_path / "copy.jpg")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert not report["content_credentials"]["present"] and report["watermark"]["found"]


def test_no_mark_warns_and_marks_nothing(tmp_path, capsys):
    assert main(["generate", "--seeds", "1", "--out", str(tmp_path / "f"), "--no-mark"]) == 0
    err = capsys.readouterr().err
    assert "--no-mark" in err and "no Content Credentials" in err
    os.environ["FACESYNTH_NO_MARK"] = ""  # main() turned it off for this process; the fixture restores it
    assert main(["detect", str(tmp_path / "f" / "seed0001.png")]) == 1
    assert "no facesynth mark" in capsys.readouterr().out


def test_real_photo_and_bad_files(tmp_path, capsys):
    Image.fromarray(face_like(200, 3)).save(tmp_path / "photo.jpg", quality=90)
    (tmp_path / "junk.png").write_bytes(b"not an image at all")
    assert main(["detect", str(tmp_path / "photo.jpg")]) == 1
    assert "no facesynth mark" in capsys.readouterr().out
    assert main(["detect", str(tmp_path / "junk.png"), str(tmp_path / "gone.png")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "junk.png" in err[0] and "gone.png: no such file" in err[1]
    assert not any("Traceback" in line for line in err)


def test_video_frames_are_marked(tmp_path):
    from facesynth.util.video import write_video

    frames = [face_like(128, i // 4) for i in range(8)]
    mark = for_model(default_model(), seeds=[1, 2])
    write_video(frames, tmp_path / "v.gif", fps=8, mark=mark)
    report = detect_file(tmp_path / "v.gif")
    assert report["kind"] == "video" and report["marked"] and report["watermark"]["found"]
    pytest.importorskip("imageio_ffmpeg", reason="mp4 needs imageio-ffmpeg")
    write_video(frames, tmp_path / "v.mp4", fps=8, mark=mark)
    report = detect_file(tmp_path / "v.mp4")
    assert report["content_credentials"]["valid"] and report["watermark"]["found"]


def test_provenance_pulls_in_no_networks():
    import subprocess
    import sys

    code = ("import json, sys, facesynth.provenance.detect, facesynth.provenance.marking; "
            "print(json.dumps(sorted(m for m in sys.modules if m.startswith(('facesynth', 'torch')))))")
    loaded = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                       check=True).stdout)
    assert not [m for m in loaded if m.startswith(("torch", "facesynth.nets", "facesynth.training"))], loaded


def test_api_detect(tmp_path):
    pytest.importorskip("fastapi", reason="the web extra is not installed")
    from fastapi.testclient import TestClient

    from facesynth.web import ServerSettings, create_app

    with TestClient(create_app(ServerSettings())) as client:
        face = client.get("/api/face", params={"seed": 11, "psi": 0.7})
        r = client.post("/api/detect", files={"file": ("face.png", face.content, "image/png")})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["marked"] and body["file"] == "face.png" and "made by facesynth" in body["summary"]
        assert body["content_credentials"]["claims"]["parameters"] == {"seed": 11, "psi": 0.7}
        r = client.post("/api/detect", files={"file": ("notes.txt", b"hello", "text/plain")})
        assert r.status_code == 422 and "notes.txt" in r.json()["detail"] and "/tmp" not in r.json()["detail"]


@pytest.mark.browser
def test_detect_panel_in_headless_chromium(tmp_path):
    pytest.importorskip("fastapi", reason="the web extra is not installed")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    from facesynth.web import ServerSettings
    from facesynth.web.headless import chromium_path, launch
    from facesynth.web.server import BackgroundServer

    if chromium_path() is None:
        pytest.skip("no chromium here (apt install chromium; .ci/run installs it)")
    save_png(face_like(64), tmp_path / "face.png", for_model(default_model(), seed=1))
    Image.fromarray(face_like(64, 5)).save(tmp_path / "photo.jpg")
    with BackgroundServer(ServerSettings()) as url, sync_api.sync_playwright() as p:
        browser = launch(p)
        try:
            page = browser.new_page()
            page.goto(url)
            for name, verdict in (("face.png", "Yes: made by facesynth."), ("photo.jpg", "No facesynth mark")):
                page.locator("#detect-file").set_input_files(str(tmp_path / name))
                page.wait_for_function("v => document.getElementById('detect-verdict').textContent.startsWith(v)",
                                       arg=verdict)
            assert "not found" in page.locator("#detect-watermark").inner_text()
        finally:
            browser.close()
