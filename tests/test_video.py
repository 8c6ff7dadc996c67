"""Talking-head data: landmark drawings, the clip crop, storage round trip, decoding errors; dlib on ../shared."""

import json
from pathlib import Path

import numpy as np
import pytest

from facesynth.cli import main
from facesynth.data import video
from facesynth.data.align import NoFace
from facesynth.errors import FacesynthError

TALKING = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "talking"
CLIP = TALKING / "videos" / "realisti-test_video.mp4"


def ellipse(n, cx, cy, rx, ry):
    a = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([cx + rx * np.cos(a), cy + ry * np.sin(a)], 1)


def fake_landmarks(cx=80.0, cy=60.0, s=40.0) -> np.ndarray:
    """A rough 68-point face of extent s centred at (cx, cy), each part where the scheme puts it."""
    a = np.linspace(np.pi, 0, 17)
    jaw = np.stack([0.5 * np.cos(a), 0.5 * np.sin(a)], 1)  # ear to chin to ear
    brow = np.stack([np.linspace(-0.45, -0.1, 5), np.full(5, -0.5)], 1)
    bridge = np.stack([np.zeros(4), np.linspace(-0.35, 0.05, 4)], 1)
    nostrils = np.stack([np.linspace(-0.1, 0.1, 5), np.full(5, 0.1)], 1)
    pts = np.concatenate([jaw, brow, brow[::-1] * [-1, 1], bridge, nostrils, ellipse(6, -0.25, -0.3, 0.08, 0.03),
                          ellipse(6, 0.25, -0.3, 0.08, 0.03), ellipse(12, 0, 0.3, 0.2, 0.07),
                          ellipse(8, 0, 0.3, 0.12, 0.03)])
    return pts * s + [cx, cy]


def test_draw_landmarks_colours_width_and_speed():
    import time

    for size in (64, 256):
        img = video.draw_landmarks(fake_landmarks(size / 2, size / 2, size * 0.6), size)
        assert img.shape == (size, size, 3) and img.dtype == np.uint8
        assert (img.reshape(-1, 3).max(1) == 0).mean() > 0.8  # lines on black
        colours = {c for *_, c in video.FACE_PARTS}
        assert len(colours) == len(video.FACE_PARTS) == 9  # every part its own colour
        present = {tuple(c) for c in img.reshape(-1, 3)}
        assert colours <= present
    thin = (video.draw_landmarks(fake_landmarks(32, 32, 38), 64).max(2) > 0).sum() / 64
    thick = (video.draw_landmarks(fake_landmarks(128, 128, 152), 256).max(2) > 0).sum() / 256
    assert thick > 2 * thin  # per unit of length, lines are wider at 256
    lm = fake_landmarks(128, 128, 150)
    t = time.perf_counter()
    for _ in range(100):
        video.draw_landmarks(lm, 256)
    assert (time.perf_counter() - t) / 100 < 0.01  # it runs once per training sample


def test_head_crop_is_square_steady_and_holds_every_head():
    rng = np.random.default_rng(0)
    lms = [fake_landmarks(100 + dx, 80 + dy, 40) for dx, dy in rng.normal(0, 4, (30, 2))]
    x0, y0, side = video.head_crop(lms)
    ext = max(np.ptp(lm, 0).max() for lm in lms)
    assert 2.2 * ext <= side <= 3.0 * ext
    centre = np.array([x0 + side / 2, y0 + side / 2])
    assert abs(centre[0] - 100) < 5 and 80 < centre[1] < 80 + 0.2 * ext  # a little below the face centre
    for lm in lms:  # each head (landmarks, forehead and hair above them) inside
        e = np.ptp(lm, 0).max()
        assert (lm.min(0) - e * np.array([0.15, 0.6]) >= [x0 - 1, y0 - 1]).all()
        assert (lm.max(0) + e * 0.15 <= [x0 + side + 1, y0 + side + 1]).all()


def test_crop_pads_edges_and_maps_landmarks():
    h, w = 120, 160
    yy, xx = np.mgrid[:h, :w]
    frame = np.stack([xx * 255 // w, yy * 255 // h, np.full_like(xx, 90)], -1).astype(np.uint8)
    frame[50, 70] = [255, 255, 255]  # a bright dot to follow
    # Inside the frame at scale 1: a plain cut, the dot lands where to_crop says.
    out = video.crop_frame(frame, (40, 30, 64), 64)
    assert (out == frame[30:94, 40:104]).all()
    assert video.to_crop(np.array([[70, 50]]), (40, 30, 64), 64)[0] == pytest.approx([30, 20])
    # Over the top-left corner, shrunk by 2: the outside repeats the edge, the dot's centroid is where expected.
    crop = (-40, -20, 128)
    out = video.crop_frame(frame, crop, 64)
    assert out.shape == (64, 64, 3)
    assert (out[:10, 25:] == out[10:11, 25:]).all() and (out[25:, :20] == out[25:, 20:21]).all()
    bright = out.astype(int).sum(2) - video.crop_frame(np.where(frame == 255, frame[50, 69], frame), crop, 64).sum(2)
    cy, cx = np.unravel_index(np.argmax(bright), bright.shape)
    assert np.hypot(*(video.to_crop(np.array([[70, 50]]), crop, 64)[0] - [cx, cy])) <= 1.0
    with pytest.raises(ValueError):
        video.crop_frame(frame, (500, 500, 64), 64)


def test_black_bars_are_not_picture():
    frame = np.full((100, 120, 3), 90, np.uint8)
    frame[:, :14] = 0  # pillarbox on the left
    frame[92:] = 3  # letterbox at the bottom
    frame[40:60, 50:70] = 0  # dark inside the picture: not a bar
    assert video.picture_area(frame) == (14, 0, 120, 92)
    assert video.picture_area(np.zeros((50, 50, 3), np.uint8)) == (0, 0, 50, 50)


def test_clips_round_trip_through_npz_and_load_clips(tmp_path):
    rng = np.random.default_rng(1)
    frames, lms = [], []
    for i in range(12):
        f = np.full((120, 160, 3), 40, np.uint8)
        lm = fake_landmarks(80 + i, 60, 40)
        x0, y0 = lm.min(0).astype(int)
        f[y0:y0 + 40, x0:x0 + 40] = rng.integers(0, 255, 3)
        frames.append(f)
        lms.append(None if i in (3, 7) else lm)
    entry = video.write_clip(tmp_path, "synthetic", frames, lms, 64, 24.0, "synthetic.mp4")
    video.write_index(tmp_path, 64, [entry])
    index = json.loads((tmp_path / "index.json").read_text())
    assert index["format"] == "facesynth-clips" and index["version"] == 1 and index["resolution"] == 64
    e = index["clips"][0]
    assert (e["frames"], e["kept"], e["missing"], e["file"]) == (12, 10, [3, 7], "synthetic.npz")
    assert e["area"] == [0, 0, 160, 120] and len(e["crop"]) == 3
    with np.load(tmp_path / "synthetic.npz", allow_pickle=False) as z:
        assert z["jpeg"].dtype == np.uint8 and z["offsets"].dtype == np.int64 and z["offsets"].shape == (11,)
        assert z["landmarks"].dtype == np.float32 and z["frame_numbers"].dtype == np.int32
    assert (tmp_path / "previews" / "synthetic.jpg").is_file()

    (clip,) = video.load_clips(tmp_path)
    assert (clip.name, clip.fps, clip.resolution, len(clip)) == ("synthetic", 24.0, 64, 10)
    assert clip.frame_numbers.tolist() == [0, 1, 2, 4, 5, 6, 8, 9, 10, 11]
    crop = tuple(e["crop"])
    for k, i in enumerate(clip.frame_numbers):
        img = clip.frame(k)
        assert img.shape == (64, 64, 3) and img.dtype == np.uint8
        assert np.abs(img.astype(int) - video.crop_frame(frames[i], crop, 64)).mean() < 3  # JPEG at 95
        assert clip.landmarks[k] == pytest.approx(video.to_crop(lms[i], crop, 64), abs=1e-4)
    assert clip.frame(-1).shape == (64, 64, 3)
    with pytest.raises(IndexError):
        clip.frame(10)


def test_load_clips_names_the_bad_file(tmp_path):
    with pytest.raises(FacesynthError, match="index.json: no such file"):
        video.load_clips(tmp_path)
    (tmp_path / "index.json").write_text("{not json")
    with pytest.raises(FacesynthError, match="index.json: not valid JSON"):
        video.load_clips(tmp_path)
    (tmp_path / "index.json").write_text(json.dumps({"format": "other", "clips": []}))
    with pytest.raises(FacesynthError, match="not a prepared-clips index"):
        video.load_clips(tmp_path)
    video.write_index(tmp_path, 64, [{"name": "a", "fps": 25, "file": "a.npz"}])
    with pytest.raises(FacesynthError, match="a.npz: no such file"):
        video.load_clips(tmp_path)
    (tmp_path / "a.npz").write_bytes(b"garbage")
    with pytest.raises(FacesynthError, match="a.npz: not a prepared clip"):
        video.load_clips(tmp_path / "index.json")
    np.savez(tmp_path / "a.npz", jpeg=np.zeros(10, np.uint8), offsets=np.array([0, 10]),
             landmarks=np.zeros((2, 68, 2), np.float32), frame_numbers=np.zeros(1, np.int32))
    with pytest.raises(FacesynthError, match="a.npz: inconsistent"):
        video.load_clips(tmp_path)


def test_decoding_and_unreadable_videos(tmp_path, capsys):
    from facesynth.util.video import write_video

    frames = [np.full((48, 64, 3), 20 * i, np.uint8) for i in range(10)]
    write_video(frames, tmp_path / "ok.mp4", fps=10)
    info = video.probe_video(tmp_path / "ok.mp4")
    assert (info.fps, info.width, info.height) == (10.0, 64, 48)
    got, fps = video.read_video(tmp_path / "ok.mp4")
    assert len(got) == 10 and fps == 10.0 and got[5].shape == (48, 64, 3)
    assert abs(int(got[5].mean()) - 100) < 6
    assert len(video.read_video(tmp_path / "ok.mp4", max_frames=4)[0]) == 4

    (tmp_path / "junk.mp4").write_bytes(np.random.default_rng(0).bytes(4000))
    (tmp_path / "notes.mp4").write_text("hello, this is text\n" * 20)
    for bad, why in (("junk.mp4", "not a readable video"), ("notes.mp4", "not a readable video"),
                     ("missing.mp4", "no such file")):
        with pytest.raises(FacesynthError, match=f"{bad}: {why}"):
            video.probe_video(tmp_path / bad)
        with pytest.raises(FacesynthError, match=bad):
            list(video.iter_frames(tmp_path / bad))
    assert main(["animate", "prepare", str(tmp_path / "junk.mp4"), str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "junk.mp4: not a readable video" in err and "Traceback" not in err


# --------------------------------------------------------------------------- dlib on ../shared

@pytest.fixture(scope="module")
def detector():
    if not TALKING.is_dir():
        pytest.skip(f"{TALKING} is absent (../shared holds the development data; a fresh clone has none)")
    from facesynth.data.align import LandmarkDetector

    try:
        return LandmarkDetector()
    except FacesynthError as e:
        pytest.skip(f"dlib or its landmark model is not installed: {e}")


@pytest.mark.realdata
def test_prepare_a_real_clip_and_resume(detector, tmp_path, capsys):
    out = tmp_path / "prepared"
    assert main(["animate", "prepare", str(CLIP), str(out), "--resolution", "128", "--quiet"]) == 0
    (clip,) = video.load_clips(out)
    entry = json.loads((out / "index.json").read_text())["clips"][0]
    assert entry["frames"] == 100 and entry["kept"] >= 95 and len(clip) == entry["kept"]
    assert clip.frame(0).shape == (128, 128, 3) and clip.fps == 25.0
    lm = clip.landmarks
    assert lm.min() > 0 and lm.max() < 128  # every face inside the crop
    ext = np.ptp(lm, axis=1).max(1)
    assert 0.3 * 128 < ext.max() < 0.5 * 128  # head-and-shoulders: the face about 40% of the side
    assert np.abs(np.diff(lm.mean(1), axis=0)).max() < 6  # tracked smoothly, no jumps
    npz = out / entry["file"]
    stamp = npz.stat().st_mtime_ns
    summary = video.prepare_videos([CLIP.parent / CLIP.name], out, 128, quiet=True)
    assert summary["already_done"] == 1 and summary["clips"] == 0 and npz.stat().st_mtime_ns == stamp
    with pytest.raises(FacesynthError, match="holds clips at 128"):
        video.prepare_videos([CLIP], out, 64, quiet=True)


@pytest.mark.realdata
def test_prepare_image_takes_portraits_and_refuses_animals(detector):
    crop, lm, box = video.prepare_image(TALKING / "portraits" / "s42.jpg", 128, detector)
    assert crop.shape == (128, 128, 3) and lm.shape == (68, 2) and len(box) == 3
    assert lm.min() > 0 and lm.max() < 128
    assert abs(lm[:, 0].mean() - 64) < 128 * 0.12  # centred
    for animal in sorted((TALKING / "not-human").glob("*.jpg")):
        with pytest.raises(NoFace, match="no human face found"):
            video.prepare_image(animal, 128, detector)
    with pytest.raises(FacesynthError, match="no human face found"):
        video.prepare_image(np.zeros((200, 200, 3), np.uint8), 128, detector)
