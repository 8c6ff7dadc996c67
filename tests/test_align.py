"""FFHQ-style alignment: the crop geometry on synthetic landmarks, and dlib on ../shared's portraits."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facesynth.cli import main
from facesynth.data import align
from facesynth.errors import FacesynthError

PORTRAITS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "talking" / "portraits"
NOT_HUMAN = PORTRAITS.parent / "not-human"


def face_landmarks(cx=100.0, cy=100.0, eye=40.0, angle=0.0) -> np.ndarray:
    """68 points where only the eyes (36-47) and mouth corners (48, 54) matter to the crop."""
    lm = np.zeros((68, 2))
    pts = {"le": (-eye / 2, 0), "re": (eye / 2, 0), "ml": (-eye / 3, eye * 0.9), "mr": (eye / 3, eye * 0.9)}
    c, s = np.cos(angle), np.sin(angle)
    rot = {k: (cx + c * x - s * y, cy + s * x + c * y) for k, (x, y) in pts.items()}
    lm[36:42], lm[42:48] = rot["le"], rot["re"]
    lm[48], lm[54] = rot["ml"], rot["mr"]
    return lm


def test_quad_is_level_square_and_scaled_by_the_eyes():
    quad, size = align.ffhq_quad(face_landmarks(eye=40))
    # Side: max(4 x eye distance, 3.6 x eye-to-mouth) = max(160, 3.6 * 36) = 160.
    assert size == pytest.approx(160)
    tl, bl, br, tr = quad
    assert tl[1] == pytest.approx(tr[1]) and tl[0] == pytest.approx(bl[0])  # axis-aligned for level eyes
    assert np.linalg.norm(tr - tl) == pytest.approx(160)
    # Centre a tenth of the way from the eyes to the mouth.
    assert quad.mean(0) == pytest.approx([100, 100 + 0.1 * 36])


def test_quad_turns_with_the_face():
    q0, s0 = align.ffhq_quad(face_landmarks(angle=0.0))
    q1, s1 = align.ffhq_quad(face_landmarks(angle=0.3))
    assert s1 == pytest.approx(s0)
    top = q1[3] - q1[0]
    assert np.arctan2(top[1], top[0]) == pytest.approx(0.3)


def test_crop_pads_by_reflection_where_the_face_leaves_the_photo():
    rng = np.random.default_rng(0)
    img = (rng.random((120, 120, 3)) * 255).astype(np.uint8)
    # A face near the corner: the crop reaches well outside the photo.
    out = align.align_face(img, face_landmarks(cx=20, cy=20, eye=30), 64)
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    assert out.std() > 0  # reflected and blurred content, not a flat fill


def test_missing_landmark_model_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv(align.LANDMARKS_ENV, str(tmp_path / "nope.dat"))
    with pytest.raises(FacesynthError, match="landmark model not found"):
        align.landmark_model_path()


@pytest.fixture(scope="module")
def detector():
    if not PORTRAITS.is_dir():
        pytest.skip(f"{PORTRAITS} is absent (../shared holds the development data)")
    try:
        return align.LandmarkDetector()
    except FacesynthError as e:
        pytest.skip(f"dlib or its landmark model is not installed: {e}")


@pytest.mark.realdata
def test_portraits_align_and_animals_are_refused(detector, tmp_path, capsys):
    assert main(["align", str(PORTRAITS), str(tmp_path / "out"), "--resolution", "128", "--quiet"]) == 0
    outs = sorted((tmp_path / "out").glob("*.png"))
    assert len(outs) == len(list(PORTRAITS.glob("*.jpg")))
    for p in outs:
        assert Image.open(p).size == (128, 128)
    for animal in sorted(NOT_HUMAN.glob("*.jpg")):
        assert main(["align", str(animal), str(tmp_path / "a.png")]) == 2
        assert "no human face found" in capsys.readouterr().err
    assert not (tmp_path / "a.png").exists()


@pytest.mark.realdata
def test_aligned_eyes_land_where_ffhq_puts_them(detector):
    """Re-detect the landmarks on an aligned crop: eyes level, at the same height, symmetric about the centre."""
    src = np.asarray(Image.open(PORTRAITS / "s42.jpg").convert("RGB"))
    a = align.align_image(src, 256, detector)
    face = detector.faces(a.image)[0]
    le, re = face.landmarks[36:42].mean(0), face.landmarks[42:48].mean(0)
    assert abs(le[1] - re[1]) < 256 * 0.02
    assert abs((le[0] + re[0]) / 2 - 128) < 256 * 0.03
    assert 256 * 0.2 < re[0] - le[0] < 256 * 0.3  # eye distance a quarter of the side


@pytest.mark.realdata
def test_tiny_face_is_refused(detector):
    src = np.asarray(Image.open(PORTRAITS / "s42.jpg").convert("RGB").resize((48, 48)))
    with pytest.raises(align.NoFace):
        align.align_image(src, 64, detector)


@pytest.mark.realdata
def test_dataset_align_builds_an_ffhq_style_zip(detector, tmp_path):
    from facesynth.data.build import build_dataset

    meta = build_dataset(PORTRAITS.parent, tmp_path / "a.zip", 64, align=True, quiet=True, workers=1)
    assert meta["count"] == len(list(PORTRAITS.glob("*.jpg"))) and meta["square"] == "ffhq-align"
    assert meta["skipped"] >= len(list(NOT_HUMAN.glob("*.jpg")))


@pytest.mark.realdata
def test_identity_similarity_knows_a_face_from_another(detector):
    import torch

    from facesynth.metrics.identity import FaceDescriber, identity_similarity

    faces = [align.align_image(np.asarray(Image.open(PORTRAITS / n).convert("RGB")), 128, detector).image
             for n in ("s42.jpg", "s1.jpg")]
    t = torch.from_numpy(np.stack(faces)).permute(0, 3, 1, 2).float() / 127.5 - 1
    same, other = identity_similarity(FaceDescriber(), t[:1].flip(-1).repeat(2, 1, 1, 1), t)
    assert same["distance"] < 0.6 < other["distance"]  # dlib's same-person threshold
    assert same["cosine"] > other["cosine"]


def test_framings_move_and_scale_the_ffhq_square():
    from facesynth.presets import get_preset

    rng = np.random.default_rng(0)
    lm = rng.uniform(40, 60, (68, 2))
    quad, side = align.ffhq_quad(lm)
    same, same_side = align.framed_quad(quad, align.get_framing("ffhq"))
    assert np.allclose(same, quad) and abs(same_side - side) < 1e-9
    utk, utk_side = align.framed_quad(quad, align.get_framing("utkface"))
    assert abs(utk_side / side - 0.625) < 1e-9
    down = (quad[1] - quad[0]) / np.linalg.norm(quad[1] - quad[0])  # the crop's own "toward the chin"
    assert abs((utk.mean(0) - quad.mean(0)) @ down / side - 0.100) < 1e-9
    with pytest.raises(FacesynthError, match="unknown framing"):
        align.get_framing("celeba")
    with pytest.raises(FacesynthError, match="unknown framing"):
        get_preset("tiny").replace(framing="celeba").validate()
