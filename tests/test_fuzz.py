"""Property tests on mutated and random bytes (tests/fuzz_targets.py): image decoding, the dataset tool, video
preparation and the web upload path give a valid result or a clean error, never a crash, a hang or a 5xx.
A short, derandomized budget here; `benchmarks/fuzz.py --minutes N` explores for longer."""

from __future__ import annotations

import os
import warnings

import pytest

pytest.importorskip("hypothesis", reason="hypothesis (a test dependency) is not installed")
from fuzz_targets import (  # noqa: E402
    PROBLEMS,
    check_dataset,
    check_image,
    check_upload_endpoint,
    check_upload_functions,
    check_video,
    dataset_files,
    image_bytes,
    upload_bytes,
    upload_names,
    video_bytes,
)
from hypothesis import HealthCheck, given, settings  # noqa: E402

# PIL warns about the corrupt EXIF and short reads of the inputs it is fed: they are corrupt by design.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

SCALE = float(os.environ.get("FACESYNTH_FUZZ_SCALE", "1"))  # more examples: FACESYNTH_FUZZ_SCALE=10


def budget(n: int):
    return settings(max_examples=max(1, int(n * SCALE)), deadline=None, derandomize=True, database=None,
                    suppress_health_check=list(HealthCheck))


@budget(100)
@given(image_bytes())
def test_image_decoding_never_crashes(data):
    outcome = check_image(data)
    assert outcome == "ok" or outcome in PROBLEMS, outcome


@budget(30)
@given(dataset_files())
def test_dataset_tool_never_crashes(files):
    outcome = check_dataset(files)
    assert outcome == "none readable" or outcome.endswith(f" of {len(files)}"), outcome


@pytest.fixture(scope="module")
def video_ready():
    pytest.importorskip("imageio_ffmpeg", reason="the video extra is not installed")


@budget(25)
@given(video_bytes())
def test_video_preparation_never_crashes(video_ready, data):
    try:
        from fuzz_targets import detector

        detector()
        faces = True
    except Exception:  # dlib or its model missing: probe and read only
        faces = False
    assert check_video(data, with_faces=faces) in ("refused", "read")


@budget(40)
@given(upload_bytes())
def test_upload_checks_never_crash(video_ready, data):
    outcome = check_upload_functions(data)
    assert outcome == "ok" or 400 <= int(outcome) < 500, outcome


@pytest.fixture(scope="module")
def client():
    pytest.importorskip("fastapi", reason="the web extra is not installed")
    pytest.importorskip("httpx", reason="httpx (a test dependency) is not installed")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
        from fastapi.testclient import TestClient

    from facesynth.web import ServerSettings, create_app

    with TestClient(create_app(ServerSettings(project_steps=1, max_waiting_jobs=64))) as c:
        yield c


@pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")
@budget(50)
@given(data=upload_bytes(), filename=upload_names())
def test_upload_endpoint_never_answers_5xx(client, data, filename):
    status = check_upload_endpoint(client, data, filename)
    assert status == 202 or 400 <= status < 500, status
