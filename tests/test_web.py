"""`facesynth serve`: the JSON API (faces, mixing, interpolation, jobs, bad uploads), batching, a light load
test, and the page itself in headless Chromium."""

from __future__ import annotations

import asyncio
import io
import re
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from badfiles import bomb_png
from conftest import SHARED
from PIL import Image

pytest.importorskip("fastapi", reason="the web extra is not installed (pip install 'facesynth[web]')")
pytest.importorskip("httpx", reason="httpx (a test dependency) is not installed")

HTTPX_NOTE = "Using `httpx` with `starlette.testclient`"  # newer Starlette suggests httpx2: not our concern here
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=HTTPX_NOTE)
    from fastapi.testclient import TestClient  # noqa: E402

from facesynth.web import ServerSettings, create_app  # noqa: E402
from facesynth.web.animation import parse_progress  # noqa: E402
from facesynth.web.headless import chromium_path  # noqa: E402
from facesynth.web.jobs import DONE, JobQueue, QueueFull  # noqa: E402
from facesynth.web.server import BackgroundServer  # noqa: E402

pytestmark = pytest.mark.filterwarnings(f"ignore:{HTTPX_NOTE}")

NOT_HUMAN = sorted((SHARED / "data" / "talking" / "not-human").glob("*.jpg"))


def png(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        assert im.format == "PNG"
        return np.asarray(im.convert("RGB"))


def jpeg(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="JPEG", quality=92)
    return buf.getvalue()


@pytest.fixture(scope="module")
def portrait() -> bytes:
    """A real face that ships with scikit-image (a NASA photo in the public domain): no ../shared needed."""
    from skimage.data import astronaut

    return jpeg(astronaut())


@pytest.fixture(scope="module")
def talking_head(tmp_path_factory) -> Path:
    """An untrained tiny talking-head run: the animation pipeline end to end, in seconds (the pictures are noise)."""
    from facesynth.animate.config import TalkingHeadConfig
    from facesynth.animate.model import RUN_KIND, build_networks
    from facesynth.training import snapshots

    cfg = TalkingHeadConfig(resolution=32, base_channels=8, max_channels=16, embed_dim=16, g_down_blocks=2,
                            g_res_blocks=1, attention=[8], batch=2, shots=2, content_net="none").validate()
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("talking")
    snapshots.save_snapshot(out, cfg, build_networks(cfg, 2), {}, {"images_seen": 0, "step": 0}, kind=RUN_KIND)
    return out


@pytest.fixture(scope="module")
def client():
    with TestClient(create_app(ServerSettings(max_driver_frames=8))) as c:
        yield c


def same_face(a: np.ndarray, b: np.ndarray) -> None:
    """Two drawings of one face in different batches: a CPU's kernels round differently for different batch
    sizes, so a few pixels may land one 8-bit level apart (how far depends on the host)."""
    diff = np.abs(a.astype(int) - b.astype(int))
    assert diff.max() <= 2 and (diff > 0).mean() < 1e-3, (diff.max(), (diff > 0).mean())


def wait_for(client, job: dict, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while job["state"] in ("queued", "running"):
        assert time.monotonic() < deadline, f"job still {job['state']}: {job['message']}"
        time.sleep(0.2)
        job = client.get(f"/api/jobs/{job['id']}").json()
    return job


# --------------------------------------------------------------------------- faces

def test_face_is_a_png_of_the_models_size_and_the_same_face_as_generate(client):
    from facesynth.synthesis.generate import generate_images
    from facesynth.util.grid import to_uint8

    info = client.get("/api/info").json()
    res = info["model"]["resolution"]
    r = client.get("/api/face", params={"seed": 7, "psi": 0.7})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    img = png(r.content)
    assert img.shape == (res, res, 3)
    assert client.get("/api/face", params={"seed": 7, "psi": 0.7}).content == r.content  # the cache: same bytes
    G = client.app.state.ctx.model.G
    # As the CLI draws it: exact on any host, as both are one face drawn alone (same shapes, same kernels);
    # the test client's requests come one at a time, so the server's is never batched with another.  Both carry
    # the same watermark (a function of the pixels and the model).
    from facesynth.provenance import marked

    drawn = to_uint8(generate_images(G, [7], 0.7, noise_mode="const"))[0]
    assert np.array_equal(img, marked(drawn, client.app.state.ctx.mark))
    assert png(client.get("/api/face", params={"seed": 7, "psi": 0.7, "size": 256}).content).shape == (256, 256, 3)


def test_psi_and_seed_change_the_face(client):
    def face(**params):
        return png(client.get("/api/face", params=params).content).astype(int)

    a, b, c = face(seed=3, psi=0.7), face(seed=3, psi=1.0), face(seed=4, psi=0.7)
    assert np.abs(a - b).mean() > 1 and np.abs(a - c).mean() > 1
    # psi = 0 is the mean face: every seed gives the same one (the same w, drawn alone: exact anywhere).
    assert np.array_equal(face(seed=3, psi=0.0), face(seed=99, psi=0.0))


def test_mixing(client):
    def get(path, **params):
        r = client.get(path, params=params)
        assert r.status_code == 200, r.text
        return png(r.content)

    everything = f"0-{client.get('/api/info').json()['model']['num_ws'] - 1}"
    # Every layer from the style face is the style face (the same w, each drawn alone: exact anywhere); coarse
    # styles change the source but keep it apart.
    assert np.array_equal(get("/api/mix", source=1, style=2, styles=everything), get("/api/face", seed=2))
    coarse = get("/api/mix", source=1, style=2, styles="coarse").astype(int)
    assert np.abs(coarse - get("/api/face", seed=1)).mean() > 1
    assert np.abs(coarse - get("/api/face", seed=2)).mean() > 1
    assert not np.array_equal(coarse, get("/api/mix", source=1, style=2, styles="coarse+middle"))
    r = client.get("/api/mix", params={"source": 1, "style": 2, "styles": "elbows"})
    assert r.status_code == 422 and "coarse, middle, fine" in r.json()["detail"]
    r = client.get("/api/mix", params={"source": "photo:nope", "style": 2})
    assert r.status_code == 404 and "no job" in r.json()["detail"]
    r = client.get("/api/mix", params={"source": "Bob", "style": 2})
    assert r.status_code == 422 and "neither a seed" in r.json()["detail"]


def test_interpolation_strip(client):
    r = client.get("/api/interpolate", params={"a": 1, "b": 2, "frames": 5})
    assert r.status_code == 200
    strip = png(r.content)
    res = strip.shape[0]
    assert strip.shape == (res, 5 * res, 3)
    a, b = (png(client.get("/api/face", params={"seed": s}).content) for s in (1, 2))
    # It starts and ends on them (t = 0, 1), drawn in a batch of 5 rather than alone.
    for frame, face in ((strip[:, :res], a), (strip[:, -res:], b)):
        same_face(frame, face)
    z = client.get("/api/interpolate", params={"a": 1, "b": 2, "frames": 3, "space": "z"})
    assert png(z.content).shape == (res, 3 * res, 3)
    for bad in ({"a": 1, "b": 2, "frames": 40}, {"a": 1, "b": 2, "space": "q"}, {"a": 1}):
        r = client.get("/api/interpolate", params=bad)
        assert r.status_code == 422 and isinstance(r.json()["detail"], str)


def test_bad_parameters_get_a_sentence(client):
    for params, words in (({"seed": -1}, "seed: -1 is out of range"), ({"seed": 1, "psi": 9}, "psi:"),
                          ({}, "seed is required"), ({"seed": "x"}, "seed: Input should be a valid integer")):
        r = client.get("/api/face", params=params)
        assert r.status_code == 422 and words in r.json()["detail"]


def test_messages_say_what_the_server_does(client, portrait):
    """psi=nan is not a number 'above 2'; the projection step limit is the server's; every seed error reads the
    same whichever parameter it is; advice is not a second pair of parentheses."""
    detail = client.get("/api/face", params={"seed": 1, "psi": "nan"}).json()["detail"]
    assert detail == "psi: Input should be a finite number", detail
    limit = client.get("/api/info").json()["limits"]["max_project_steps"]
    for steps in (limit + 1, 3000):
        r = client.post("/api/jobs/project", files={"photo": ("a.jpg", portrait)}, data={"steps": str(steps)})
        assert r.status_code == 422 and r.json()["detail"] == f"steps: at most {limit} on this server", r.text
    steps_doc = client.get("/openapi.json").json()["components"]["schemas"]
    assert "2000" not in str(steps_doc)
    answers = {(path, name): client.get(path, params=params).json()["detail"]
               for path, name, params in (("/api/face", "seed", {"seed": 2**32}),
                                          ("/api/mix", "source", {"source": 2**32, "style": 1}),
                                          ("/api/interpolate", "b", {"a": 1, "b": 2**32}))}
    assert {detail.split(": ", 1)[1] for detail in answers.values()} == {
        "4294967296 is out of range: seeds are whole numbers from 0 to 4294967295"}, answers
    assert all(detail.startswith(f"{name}: ") for (_, name), detail in answers.items())
    r = client.post("/api/jobs/project", files={"photo": ("notes.jpg", b"words, not pixels", "image/jpeg")})
    detail = r.json()["detail"]
    assert r.status_code == 415 and ") (" not in detail and detail.count("(") == detail.count(")") <= 1, detail


def test_head_is_answered_like_get(client):
    for url in ("/", "/api/info", "/api/face?seed=3&size=32", "/docs", "/static/app.js", "/api/drivers/astronaut"):
        get, head = client.get(url), client.head(url)
        assert head.status_code == 200 == get.status_code, (url, head.status_code)
        assert head.content == b"" and head.headers["content-type"] == get.headers["content-type"], url
        assert int(head.headers["content-length"]) == len(get.content), url


def test_api_docs_work_offline(client):
    """/docs and /redoc load nothing from another origin, and what they load is served here."""
    for page, needs in (("/docs", ("javascript", "css")), ("/redoc", ("javascript",))):
        r = client.get(page)
        assert r.status_code == 200
        assert "//" not in re.sub(r"<!--.*?-->", "", r.text, flags=re.S), f"{page} names another origin"
        urls = re.findall(r'(?:src|href)="([^"]+)"', r.text)
        types = []
        for url in urls:
            asset = client.get(url)
            assert asset.status_code == 200 and len(asset.content) > 100, url
            types.append(asset.headers["content-type"])
        assert all(any(kind in t for t in types) for kind in needs), (page, urls, types)
        assert len(client.get(urls[-1]).content) > 500_000  # the whole UI bundle, not a stub
    assert "third-party" not in client.get("/openapi.json").text.lower()


def test_ranges_are_defined_once(client):
    """The API, /api/info (which the page reads) and docs/web say the same range for each number."""
    from facesynth.web import params

    ranges = client.get("/api/info").json()["ranges"]
    assert ranges == params.ranges()
    schema = {p["name"]: p["schema"] for p in client.get("/openapi.json").json()["paths"]["/api/face"]["get"]
              ["parameters"]}
    for name in ("seed", "psi", "size"):
        bounds = next(s for s in schema[name].get("anyOf", [schema[name]]) if "minimum" in s)  # size may be null
        assert (bounds["minimum"], bounds["maximum"]) == (ranges[name]["min"], ranges[name]["max"]), name
    seed, psi = ranges["seed"], ranges["psi"]
    for query, status in (({"seed": seed["max"], "psi": psi["max"]}, 200),
                          ({"seed": seed["min"], "psi": psi["min"]}, 200), ({"seed": seed["max"] + 1}, 422),
                          ({"seed": 1, "psi": psi["max"] + 0.01}, 422), ({"seed": 1, "psi": psi["min"] - 0.01}, 422)):
        assert client.get("/api/face", params={**query, "size": 16}).status_code == status, query
    docs = " ".join((Path(__file__).resolve().parents[1] / "docs" / "web" / "README.md").read_text().split())
    assert f"{seed['min']} to {seed['max']}" in docs and f"{psi['min']:g} to {psi['max']:g}" in docs


def test_image_size_is_bounded_per_request(client):
    """A 16-frame strip at 1024 px (16 megapixels) is refused before anything is drawn; the largest face is not."""
    budget = client.get("/api/info").json()["limits"]["max_image_pixels"]
    assert budget == 1024 * 1024
    before = client.get("/api/stats").json()["batcher"]["faces"]
    t0 = time.perf_counter()
    r = client.get("/api/interpolate", params={"a": 1, "b": 2, "frames": 16, "size": 1024})
    assert r.status_code == 422 and "16.8 megapixels" in r.json()["detail"] and "at most 1.0" in r.json()["detail"]
    assert time.perf_counter() - t0 < 1 and client.get("/api/stats").json()["batcher"]["faces"] == before
    assert png(client.get("/api/face", params={"seed": 1, "size": 1024}).content).shape == (1024, 1024, 3)
    r = client.get("/api/interpolate", params={"a": 1, "b": 2, "frames": 16, "size": 256})  # exactly the budget
    assert r.status_code == 200 and png(r.content).shape == (256, 16 * 256, 3)


def test_interpolation_wraps_to_rows(client):
    """A narrow screen asks for the frames in rows; each is the frame the one-row strip has."""
    res = client.get("/api/info").json()["model"]["resolution"]
    row = png(client.get("/api/interpolate", params={"a": 1, "b": 2, "frames": 5}).content)
    grid = png(client.get("/api/interpolate", params={"a": 1, "b": 2, "frames": 5, "columns": 3}).content)
    assert grid.shape == (2 * res, 3 * res, 3)
    cells = [grid[r * res:(r + 1) * res, c * res:(c + 1) * res] for r in range(2) for c in range(3)]
    for i in range(5):  # the same request's frames, drawn in the same batch: the same pixels
        assert np.array_equal(cells[i], row[:, i * res:(i + 1) * res]), i
    assert not cells[5].any()  # the row's empty end
    r = client.get("/api/interpolate", params={"a": 1, "b": 2, "frames": 8, "columns": 4, "size": 32})
    assert png(r.content).shape == (64, 128, 3)


def test_concurrent_requests_are_batched():
    """Requests arriving together are drawn in fewer forward passes than there are requests."""
    from facesynth.web.batcher import Batcher
    from facesynth.web.faces import FaceModel
    from facesynth.web.settings import ServerSettings as S

    model = FaceModel(S().generator_path())
    for cap, batches in ((64, 1), (8, 4)):  # 24 faces and a 3-frame strip: one pass, or passes of at most 8
        batcher = Batcher(model.G, max_batch=cap, window_s=0.05)
        futures = [batcher.submit(model.face_ws(s, 0.7)) for s in range(24)]  # queued before the thread starts
        futures.append(batcher.submit(model.strip_ws(1, 2, 3, 0.7), count=3))
        batcher.start()
        try:
            images = [f.result(timeout=60) for f in futures]
        finally:
            batcher.stop()
        assert (batcher.stats.batches, batcher.stats.faces, batcher.stats.largest) == (batches, 27, min(cap, 27))
        assert all(img.shape == (1, model.resolution, model.resolution, 3) for img in images[:-1])
        assert images[-1].shape == (3, model.resolution, model.resolution, 3)


def test_a_face_is_the_same_in_any_batch_to_within_rounding():
    """What the server says about repeated images: the same URL gives the same bytes while its PNG is cached
    (test_face_is_a_png...); drawn again, in another batch, it is the same face to within rounding, and
    nothing (docstrings, README, docs/web) promises more."""
    from facesynth.web.batcher import Batcher
    from facesynth.web.faces import FaceModel
    from facesynth.web.settings import ServerSettings as S

    model = FaceModel(S().generator_path())
    batcher = Batcher(model.G, max_batch=16, window_s=0.05)
    together = [batcher.submit(model.face_ws(s, 0.7)) for s in range(16)]  # queued first: one batch of 16
    batcher.start()
    try:
        batched = [f.result(timeout=60)[0] for f in together]
        alone = [batcher.submit(model.face_ws(s, 0.7)).result(timeout=60)[0] for s in range(16)]
    finally:
        batcher.stop()
    assert batcher.stats.largest == 16
    for a, b in zip(batched, alone):
        same_face(a, b)
    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text()
    section = readme.split("### `serve`: the web page", 1)[1].split("\n### ", 1)[0]
    texts = [section, (root / "docs" / "web" / "README.md").read_text(),
             *(p.read_text() for p in (root / "src" / "facesynth" / "web").glob("*.py"))]
    assert not [t for t in texts if re.search(r"byte[ -]for[ -]byte|pure function", t)]


# --------------------------------------------------------------------------- uploads and jobs

def test_projection_job_then_mix_the_photo(client, portrait):
    r = client.post("/api/jobs/project", files={"photo": ("astronaut.jpg", portrait, "image/jpeg")},
                    data={"steps": "3"})
    assert r.status_code == 202, r.text
    job = wait_for(client, r.json())
    assert job["state"] == DONE and job["progress"] == 1.0, job
    res = client.get("/api/info").json()["model"]["resolution"]
    assert png(client.get(job["result_url"]).content).shape == (res, res, 3)
    assert png(client.get(job["input_url"], params={"size": 128}).content).shape == (128, 128, 3)
    # The photo is cropped as the model's training faces were (its config's framing), like `facesynth project`.
    from facesynth.data.align import align_image
    from facesynth.data.images import decode_image

    G = client.app.state.ctx.model.G
    expected = align_image(decode_image(portrait), res, framing=G.cfg.framing).image
    assert np.array_equal(png(client.get(job["input_url"]).content), expected)
    photo = job["result"]["face"]
    r = client.get("/api/mix", params={"source": photo, "style": 5, "styles": "fine"})
    assert r.status_code == 200 and png(r.content).shape == (res, res, 3)
    assert client.get("/api/interpolate", params={"a": photo, "b": 5, "frames": 3}).status_code == 200
    r = client.get("/api/interpolate", params={"a": photo, "b": 5, "space": "z"})
    assert r.status_code == 422 and "two seeds" in r.json()["detail"]


def upload_cases():
    yield "not an image", {"photo": ("notes.jpg", b"these are words, not pixels", "image/jpeg")}, 415, "not an image"
    yield "0 bytes", {"photo": ("empty.jpg", b"", "image/jpeg")}, 400, "empty"
    yield "decompression bomb", {"photo": ("bomb.png", bomb_png(), "image/png")}, 422, \
        "bomb.png: image too large (400000000 pixels declared"
    yield "truncated", {"photo": ("cut.jpg", jpeg(np.zeros((64, 64, 3), np.uint8))[:300], "image/jpeg")}, 415, \
        "cut.jpg: truncated"
    yield "50 MB", {"photo": ("huge.jpg", b"\xff" * (50 * 2**20), "image/jpeg")}, 413, "larger than"
    yield "no file", None, 422, "photo is required"
    yield "tiny image", {"photo": ("dot.png", _png_bytes(np.zeros((8, 8, 3), np.uint8)), "image/png")}, 422, "too small"
    yield "no face", {"photo": ("wall.png", _png_bytes(np.full((200, 200, 3), 128, np.uint8)), "image/png")}, 422, \
        "no human face"


def _png_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize("case", list(upload_cases()), ids=lambda c: c[0])
def test_bad_uploads_get_4xx_with_a_message_and_the_server_goes_on(client, case):
    _, files, status, words = case
    r = client.post("/api/jobs/project", files=files) if files else client.post("/api/jobs/project")
    assert r.status_code == status, r.text
    assert words in r.json()["detail"]
    assert client.get("/api/face", params={"seed": 11}).status_code == 200


@pytest.mark.realdata
@pytest.mark.skipif(not NOT_HUMAN, reason=f"no animal photos in {SHARED / 'data/talking/not-human'} "
                    "(../shared holds the development data; a fresh clone has none)")
@pytest.mark.parametrize("path", NOT_HUMAN, ids=lambda p: p.name)
def test_animals_are_refused_with_a_message(client, path):
    r = client.post("/api/jobs/project", files={"photo": (path.name, path.read_bytes(), "image/jpeg")})
    assert r.status_code == 422 and "no human face" in r.json()["detail"] and path.name in r.json()["detail"]
    assert client.get("/api/face", params={"seed": 12}).status_code == 200


def test_a_body_too_large_is_refused_while_it_streams(client):
    def body():  # no Content-Length: the cap is enforced as the bytes arrive
        for _ in range(50):
            yield b"\0" * 2**20

    r = client.post("/api/jobs/project", content=body(), headers={"content-type": "multipart/form-data; boundary=x"})
    assert r.status_code == 413 and "larger than" in r.json()["detail"]
    assert client.get("/api/face", params={"seed": 13}).status_code == 200


def test_animation_is_off_without_a_talking_head_model(portrait, monkeypatch, tmp_path):
    import facesynth.models

    monkeypatch.delenv("FACESYNTH_ANIMATE_CKPT", raising=False)
    monkeypatch.setattr(facesynth.models, "DEFAULT_TALKING_MODEL", tmp_path / "none.safetensors")  # a trimmed copy
    with TestClient(create_app(ServerSettings(max_driver_frames=8))) as client:
        info = client.get("/api/info").json()
        assert info["features"]["animate"]["available"] is False
        assert "--animate-ckpt" in info["features"]["animate"]["reason"]
        assert "astronaut" in [d["name"] for d in info["drivers"]]
        r = client.post("/api/jobs/animate", files={"photo": ("a.jpg", portrait)}, data={"driver": "astronaut"})
        assert r.status_code == 503 and "--animate-ckpt" in r.json()["detail"]


def test_animation_is_on_by_default_with_the_bundled_model(client):
    from facesynth.models import default_talking_model

    if default_talking_model() is None:
        pytest.skip("this installation has no bundled talking-head model")
    assert client.get("/api/info").json()["features"]["animate"]["available"]


def test_animation_job_makes_a_playable_video(talking_head, portrait):
    import imageio_ffmpeg

    with TestClient(create_app(ServerSettings(animate_ckpt=str(talking_head), max_driver_frames=6))) as c:
        assert c.get("/api/info").json()["features"]["animate"]["available"]
        assert c.get("/api/drivers/astronaut").headers["content-type"] == "video/mp4"
        r = c.post("/api/jobs/animate", files={"photo": ("astronaut.jpg", portrait)}, data={"driver": "astronaut"})
        assert r.status_code == 202, r.text
        seen = []
        job = r.json()
        while job["state"] in ("queued", "running"):
            seen.append(job["progress"])
            time.sleep(0.2)
            job = c.get(f"/api/jobs/{job['id']}").json()
        assert job["state"] == DONE, job
        assert seen == sorted(seen) and job["result"]["frames"] == 6
        video = c.get(job["result_url"])
        assert video.headers["content-type"] == "video/mp4"
        assert "attachment" in c.get(job["result_url"], params={"download": 1}).headers["content-disposition"]
        path = Path(c.app.state.ctx.jobs.root) / "check.mp4"
        path.write_bytes(video.content)
        gen = imageio_ffmpeg.read_frames(str(path))
        meta = next(gen)
        assert meta["size"][0] >= 256 and sum(1 for _ in gen) == 6
        r = c.post("/api/jobs/animate", files={"photo": ("a.jpg", portrait), "driver_video": ("clip.mp4", b"nope")})
        assert r.status_code == 415 and "not a video" in r.json()["detail"]
        r = c.post("/api/jobs/animate", files={"photo": ("a.jpg", portrait)}, data={"driver": "moonwalk"})
        assert r.status_code == 404 and "astronaut" in r.json()["detail"]


def test_job_queue_refuses_past_its_length(tmp_path):
    release = threading.Event()
    jobs = JobQueue(tmp_path, workers=1, max_waiting=2)
    try:
        running = jobs.submit("x", lambda job: release.wait(30) and {})
        waiting = [jobs.submit("x", lambda job: {}) for _ in range(2)]
        deadline = time.monotonic() + 10
        while running.state != "running" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert [jobs.position(j) for j in waiting] == [0, 1]
        with pytest.raises(QueueFull, match="2 jobs are already waiting"):
            jobs.submit("x", lambda job: {})
        release.set()
        deadline = time.monotonic() + 10
        while not all(j.over for j in [running, *waiting]) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert all(j.state == DONE for j in [running, *waiting])
        jobs.submit("x", lambda job: {})  # room again
    finally:
        release.set()
        jobs.shutdown()


def test_stopping_the_server_stops_running_jobs(tmp_path):
    jobs = JobQueue(tmp_path)

    def endless(job):
        while True:
            job.report(0.5, "working")
            time.sleep(0.01)

    job = jobs.submit("x", endless)
    while job.state != "running":
        time.sleep(0.01)
    jobs.shutdown()
    deadline = time.monotonic() + 10
    while not job.over and time.monotonic() < deadline:
        time.sleep(0.01)
    assert job.state == "failed" and "stopping" in job.error


def test_unknown_jobs_are_404(client):
    r = client.get("/api/jobs/doesnotexist")
    assert r.status_code == 404 and "no job" in r.json()["detail"]
    assert client.get("/api/jobs/doesnotexist/result").status_code == 404


def test_progress_is_read_from_reenacts_bars():
    assert parse_progress("clip.mp4: landmarks:  50%|█████     | 5/10 [00:01<00:01, 4.0frame/s]") == (
        pytest.approx(0.3), "tracking the face in the driving clip: frame 5 of 10")
    frac, text = parse_progress("reenact: 100%|██████████| 8/8 [00:00<00:00, 30frame/s]")
    assert frac == 1.0 and "rendering" in text
    assert parse_progress("photo.png: 2 faces found; using the largest") is None


def test_openapi_documents_the_api(client):
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/api/face", "/api/mix", "/api/interpolate", "/api/jobs/project", "/api/jobs/animate",
                 "/api/jobs/{job_id}", "/api/jobs/{job_id}/result"):
        assert path in paths
    assert client.get("/docs").status_code == 200
    assert "This person does not exist" in client.get("/").text


def test_serve_command_passes_its_options(monkeypatch):
    import facesynth.web as web
    from facesynth.cli import main

    seen = {}
    monkeypatch.setattr(web, "serve", lambda settings, host, port: seen.update(s=settings, host=host, port=port))
    assert main(["serve", "--ckpt", "m.safetensors", "--animate-ckpt", "talk", "--port", "8123"]) == 0
    assert (seen["s"].ckpt, seen["s"].animate_ckpt, seen["host"], seen["port"]) == ("m.safetensors", "talk",
                                                                                  "127.0.0.1", 8123)


# --------------------------------------------------------------------------- the real server

@pytest.fixture(scope="module")
def live_server():
    with BackgroundServer(ServerSettings()) as url:
        yield url


def test_light_load_on_loopback(live_server):
    """100 concurrent requests for different faces: no errors, and drawn in far fewer passes than requests."""
    import httpx

    async def fetch_all() -> list[tuple[int, float]]:
        limits = httpx.Limits(max_connections=100)
        async with httpx.AsyncClient(base_url=live_server, limits=limits, timeout=120) as http:
            async def one(seed):
                t0 = time.perf_counter()
                r = await http.get("/api/face", params={"seed": 10_000 + seed, "psi": 0.7})
                if r.status_code == 200:
                    png(r.content)
                return r.status_code, time.perf_counter() - t0
            return await asyncio.gather(*(one(s) for s in range(100)))

    before = httpx.get(f"{live_server}/api/stats").json()["batcher"]
    results = asyncio.run(fetch_all())
    after = httpx.get(f"{live_server}/api/stats").json()["batcher"]
    assert [code for code, _ in results] == [200] * 100
    batches = after["batches"] - before["batches"]
    assert after["faces"] - before["faces"] == 100 and batches <= 20, after


@pytest.mark.browser
@pytest.mark.skipif(chromium_path() is None, reason="no chromium here: the browser test needs the system's "
                    "(apt install chromium; .ci/run installs it)")
def test_page_in_headless_chromium(live_server):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
    from facesynth.web.headless import launch

    loaded = "img => img.complete && img.naturalWidth > 0"
    with sync_api.sync_playwright() as p:
        browser = launch(p)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(f"{live_server}/?seed=5&psi=0.7")  # a shared link reproduces its face
            img = page.locator("#face-img")
            page.wait_for_function(f"({loaded})(document.getElementById('face-img'))")
            assert page.locator("#seed").inner_text() == "5"
            first_src = img.get_attribute("src")
            assert "seed=5" in first_src and "psi=0.7" in first_src

            main_face = "size=320"  # the big face; the panels ask for smaller ones
            old = img.evaluate("i => i.src")
            with page.expect_response(lambda r: "/api/face" in r.url and main_face in r.url
                                      and "seed=5&" not in r.url) as new_face:
                page.click("#new-face")
            assert new_face.value.status == 200
            page.wait_for_function(f"src => document.getElementById('face-img').src !== src "
                                   f"&& ({loaded})(document.getElementById('face-img'))", arg=old)
            seed = page.locator("#seed").inner_text()
            assert seed != "5" and f"seed={seed}" in img.get_attribute("src") and f"seed={seed}" in page.url
            first_bytes = page.request.get(f"{live_server}{first_src}").body()
            assert new_face.value.body() != first_bytes
            # The mixing source and the strip's first face were the face shown: they follow it.
            page.wait_for_function("s => document.getElementById('mix-source-img').src.includes(`seed=${s}&`) && "
                                   "document.getElementById('interp-strip').src.includes(`a=${s}&`)", arg=seed)
            assert page.input_value("#mix-source") == seed == page.input_value("#interp-a")

            with page.expect_request(lambda r: "/api/face" in r.url and main_face in r.url
                                     and f"seed={seed}" in r.url and "psi=0.65" in r.url):
                page.focus("#psi")
                page.keyboard.press("ArrowLeft")  # one step of 0.05
            assert page.locator("#psi-value").inner_text() == "0.65"
            page.wait_for_function("() => location.search.includes('psi=0.65')")
            check_dice_and_seed_fields(page)
            check_nav_links_clear_the_bar(page)
            check_a_link_out_of_range(browser, live_server)
            check_phone_layout(browser, live_server)
            assert errors == []
        finally:
            browser.close()


ALL_LOADED = """() => [...document.images].filter(i => i.getAttribute('src') && i.offsetParent)
                                   .every(i => i.complete && i.naturalWidth > 0)"""


def check_dice_and_seed_fields(page):
    """Each ⚄ puts a new seed in its field and the panel draws it; a field holding no seed says so and draws
    nothing (a negative seed used to draw seed 0)."""
    shows = {"mix-source": ("mix-source-img", "seed="), "mix-style": ("mix-style-img", "seed="),
             "interp-a": ("interp-strip", "a="), "interp-b": ("interp-strip", "b=")}
    seed_max = page.evaluate("() => fetch('/api/info').then(r => r.json()).then(i => i.ranges.seed.max)")
    for field, (img, param) in shows.items():
        before = page.input_value(f"#{field}")
        page.click(f"[data-dice={field}]")
        after = page.input_value(f"#{field}")
        assert after != before and 0 <= int(after) <= seed_max, (field, before, after)
        page.wait_for_function("([img, want]) => document.getElementById(img).src.includes(want)",
                               arg=[img, f"{param}{after}&"])
    drawn = page.get_attribute("#mix-source-img", "src")
    page.fill("#mix-source", "-3")
    page.dispatch_event("#mix-source", "change")
    page.wait_for_selector("#toast:not([hidden])")
    assert "not a seed" in page.inner_text("#toast") and page.get_attribute("#mix-source", "aria-invalid") == "true"
    page.wait_for_timeout(300)
    assert page.get_attribute("#mix-source-img", "src") == drawn
    page.fill("#mix-source", "12")
    page.dispatch_event("#mix-source", "change")
    page.wait_for_function("() => document.getElementById('mix-source-img').src.includes('seed=12&')")
    assert page.get_attribute("#mix-source", "aria-invalid") == "false"


def check_nav_links_clear_the_bar(page):
    """A section jumped to from the top bar shows its heading below the bar, not under it."""
    page.evaluate("() => scrollTo(0, 0)")
    for section in ("mixing", "interpolation"):
        page.click(f"nav a[href='#{section}']")
        page.wait_for_function("() => { const y = scrollY, still = window.lastY === y; window.lastY = y; "
                               "return still && y > 0; }", polling=150)
        bar = page.locator(".topbar").bounding_box()
        heading = page.locator(f"#{section} h2").bounding_box()
        assert heading["y"] >= bar["y"] + bar["height"], (section, heading, bar)


def check_a_link_out_of_range(browser, url):
    """A shared link with ψ beyond the API's range and a seed past 2^32 - 1: ψ is clamped, the seed replaced,
    the visitor told, and every image on the page still draws."""
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    try:
        page.goto(f"{url}/?seed=4294967296&psi=5")
        page.wait_for_selector("#mix-groups .chip")
        page.wait_for_function(ALL_LOADED, timeout=30_000)
        ranges = page.evaluate("() => fetch('/api/info').then(r => r.json()).then(i => i.ranges)")
        slider = page.locator("#psi")
        assert (float(slider.get_attribute("min")), float(slider.get_attribute("max"))) == (
            ranges["psi"]["min"], ranges["psi"]["max"])
        assert slider.input_value() == "2" and page.inner_text("#psi-value") == "2.00"
        seed = int(page.inner_text("#seed"))
        assert 0 <= seed <= ranges["seed"]["max"] and f"seed={seed}&psi=2" in page.url
        note = page.inner_text("#toast")
        assert "4294967296" in note and "ψ" in note, note
    finally:
        page.close()


def check_phone_layout(browser, url):
    """On a phone: the strip wraps to frames of at least 64 px with no empty band, and the small controls are
    44 px tall."""
    page = browser.new_page(viewport={"width": 390, "height": 844})
    try:
        page.goto(f"{url}/?seed=5&psi=0.7")
        page.wait_for_selector("#mix-groups .chip")
        page.wait_for_function(ALL_LOADED, timeout=30_000)
        strip = page.locator("#interp-strip")
        query = dict(part.split("=") for part in strip.get_attribute("src").split("?", 1)[1].split("&"))
        columns = int(query.get("columns", query["frames"]))
        box, frame = strip.bounding_box(), page.locator(".strip-frame").bounding_box()
        assert box["width"] / columns >= 64, (box, columns)
        assert abs(frame["height"] - box["height"]) <= 1, (frame, box)
        small = ["#psi", "#mix-groups .chip", "[data-dice]", ".seed-input input"]
        heights = {sel: [page.locator(sel).nth(i).bounding_box()["height"]
                         for i in range(page.locator(sel).count())] for sel in small}
        assert all(h >= 44 for hs in heights.values() for h in hs) and all(heights.values()), heights
    finally:
        page.close()
