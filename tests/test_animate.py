"""Talking heads: networks, meta-learning (resume exact), fine-tuning, retargeting, evaluation, bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from test_video import fake_landmarks

from facesynth.animate.config import PRESETS, TalkingHeadConfig
from facesynth.animate.reenact import fill_missing, reference_frame, retarget, similarity_transform
from facesynth.animate.train import MetaTrainOptions, meta_train
from facesynth.data.video import draw_landmarks, write_clip
from facesynth.errors import FacesynthError
from facesynth.nets.talking_head import Embedder, ProjectionDiscriminator, TalkingHeadGenerator, adain
from facesynth.util.atomic import write_json_atomic

TINY = dict(resolution=32, base_channels=8, max_channels=16, embed_dim=16, g_down_blocks=2, g_res_blocks=1,
            attention=[8], batch=2, shots=2, snapshot_steps=2, content_net="none", finetune_steps=2)


def face_like(rng, shift=(0.0, 0.0), size=64) -> np.ndarray:
    """A rough face's 68 points in a size x size image, jittered a little."""
    return fake_landmarks(size / 2 + shift[0], size / 2 + shift[1], 0.6 * size) + rng.normal(0, 0.3, (68, 2))


def synthetic_clips(out: Path) -> Path:
    """Three synthetic 'videos' of 10 frames each: a tinted face drawing moving sideways."""
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    entries = []
    for c in range(3):
        frames, lms = [], []
        for t in range(10):
            lm = face_like(rng, (t - 5, 0))
            frames.append((np.full((64, 64, 3), 30 + 50 * c) + draw_landmarks(lm, 64) // 2).astype(np.uint8))
            lms.append(lm)
        entries.append(write_clip(out, f"clip{c}", frames, lms, 64, 25.0))
    write_json_atomic(out / "index.json", {"format": "facesynth-clips", "version": 1, "resolution": 64,
                                           "clips": entries})
    return out


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return synthetic_clips(tmp_path_factory.mktemp("clips"))


def test_paper_preset_has_the_papers_sizes():
    cfg = PRESETS["talking-256-paper"]
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert 35e6 < count(TalkingHeadGenerator(cfg)) < 41e6  # the paper: G ~38M
    assert 13e6 < count(Embedder(cfg)) < 17e6  # the paper: E ~15M


def test_networks_shapes_and_adain():
    cfg = TalkingHeadConfig(**TINY).validate()
    E, G, D = Embedder(cfg), TalkingHeadGenerator(cfg), ProjectionDiscriminator(cfg, 5).eval()
    frames, lms = torch.randn(3, 2, 3, 32, 32), torch.rand(3, 2, 3, 32, 32) * 2 - 1
    e = E(frames, lms)
    assert e.shape == (3, 16)
    img = G(lms[:, 0], G.psi(e))
    assert img.shape == (3, 3, 32, 32) and img.abs().max() <= 1
    score, feats = D(img, lms[:, 0], torch.tensor([0, 4, 2]))
    assert score.shape == (3,) and len(feats) >= 3
    # The same score through an explicit person vector w = W_i + w0 (eval: no power iteration between calls).
    w = D.W[4] + D.w0
    assert torch.allclose(D(img[1:2], lms[1:2, 0], w=w)[0], score[1:2], atol=1e-5)
    x = torch.randn(2, 4, 8, 8)
    zero = torch.zeros(2, 4)
    assert torch.allclose(adain(x, zero, zero), torch.nn.functional.instance_norm(x, eps=1e-5), atol=1e-5)
    # psi changes the output: the identity really flows through AdaIN.
    assert not torch.allclose(G(lms[:, 0], G.psi(e)), G(lms[:, 0], G.psi(e.flip(0))))


def test_config_rejects_bad_values():
    with pytest.raises(FacesynthError, match="g_down_blocks"):
        TalkingHeadConfig(resolution=32, g_down_blocks=4).validate()
    with pytest.raises(FacesynthError, match="content_net"):
        TalkingHeadConfig(content_net="vggface").validate()


def _model_tensors(run):
    snaps = sorted(run.glob("snapshot-*"))
    return load_file(str(snaps[-1] / "model.safetensors"))


def test_meta_training_resumes_exactly(prepared, tmp_path):
    common = dict(data=str(prepared), overrides=TINY, quiet=True, tick_steps=1)
    meta_train(MetaTrainOptions(out=str(tmp_path / "a"), steps=4, exclude=["clip2"], **common))
    meta_train(MetaTrainOptions(out=str(tmp_path / "b"), steps=2, exclude=["clip2"], **common))
    meta_train(MetaTrainOptions(out=str(tmp_path / "b"), steps=4, resume="auto", **common))
    a, b = _model_tensors(tmp_path / "a"), _model_tensors(tmp_path / "b")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert a["D.W"].shape[0] == 2  # clip2 was kept aside
    assert (tmp_path / "a" / "samples-0000004.png").is_file()
    with pytest.raises(FacesynthError, match="already holds a run"):
        meta_train(MetaTrainOptions(out=str(tmp_path / "a"), steps=5, **common))


def test_meta_training_learns_the_synthetic_clips(prepared, tmp_path):
    import json

    meta_train(MetaTrainOptions(data=str(prepared), out=str(tmp_path / "r"), steps=60, quiet=True, tick_steps=10,
                                overrides={**TINY, "pixel_weight": 10.0, "g_lr": 1e-3, "d_lr": 1e-3,
                                           "snapshot_steps": 60}))
    lines = [json.loads(x) for x in (tmp_path / "r" / "stats.jsonl").read_text().splitlines()]
    assert lines[-1]["loss/pixel"] < 0.7 * lines[0]["loss/pixel"]


def test_finetune_and_render(prepared, tmp_path):
    from facesynth.animate.episodes import load_videos
    from facesynth.animate.evaluate import evaluate
    from facesynth.animate.finetune import finetune_person, save_person
    from facesynth.animate.reenact import Portrait, load_talker

    meta_train(MetaTrainOptions(data=str(prepared), out=str(tmp_path / "r"), steps=2, overrides=TINY, quiet=True,
                                exclude=["clip1"]))
    v = load_videos(prepared, 32, include=["clip1"], quiet=True)[0]
    portraits = [Portrait("f0", v.frames[0].permute(1, 2, 0).numpy(), v.drawings[0].permute(1, 2, 0).numpy(),
                          v.landmarks[0])]
    person, info = finetune_person(str(tmp_path / "r"), portraits, steps=2, quiet=True)
    path = save_person(person, info, tmp_path / "person")
    talker, meta = load_talker(path, None)
    assert meta["kind"] == "facesynth-talking-person"
    frames = list(talker.render(v.landmarks[:3]))
    assert len(frames) == 3 and frames[0].shape == (32, 32, 3) and frames[0].dtype == np.uint8
    with pytest.raises(FacesynthError, match="needs --source"):
        load_talker(tmp_path / "r", None)
    report = evaluate(str(tmp_path / "r"), str(prepared), shots=(1, 2), targets=3, quiet=True)
    assert set(report["results"]) == {"1-shot", "2-shot", "baseline", "tps", "tps-face"}
    assert report["clips"] == ["clip1"]  # the clip the run kept aside
    # The baseline's SSIM is a real number; the drawings hold no face dlib would find.
    assert 0 < report["results"]["baseline"]["ssim"] <= 1


def test_talking_checkpoints_are_told_apart(tmp_path):
    from facesynth.animate.model import read_checkpoint

    bad = tmp_path / "model.pkl"
    bad.write_bytes(b"x")
    with pytest.raises(FacesynthError, match="pickled"):
        read_checkpoint(bad)


def test_retargeting_keeps_the_source_face_and_moves_it_like_the_driver():
    rng = np.random.default_rng(1)
    source = face_like(rng)
    driver_face = face_like(rng) * [1.3, 0.9] + [5, -3]  # another face shape, elsewhere, another size
    motion = np.array([[0, 0], [2, 0], [0, 3]], float)
    driver = driver_face[None] + motion[:, None]
    ref = reference_frame(source, driver, "first")
    out = retarget(source, driver, ref)
    assert np.allclose(out[0], source)  # no motion: the source exactly, not the driver's face
    s, r, _ = similarity_transform(driver_face, source)
    assert np.allclose(out[1] - source, s * r @ np.array([2, 0]), atol=1e-6)
    # A known similarity transform is recovered.
    ang = 0.3
    rot = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
    s2, r2, t2 = similarity_transform(source, 1.7 * source @ rot.T + [3, 4])
    assert abs(s2 - 1.7) < 1e-6 and np.allclose(r2, rot) and np.allclose(t2, [3, 4])


def test_missing_driver_frames_are_interpolated():
    a, b = np.zeros((68, 2)), np.ones((68, 2)) * 4
    filled, missing = fill_missing([None, a, None, None, b, None])
    assert missing == [0, 2, 3, 5]
    assert np.allclose(filled[0], a) and np.allclose(filled[2], 4 / 3) and np.allclose(filled[5], b)
    with pytest.raises(FacesynthError, match="no face"):
        fill_missing([None, None])


TALKING = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "talking"


@pytest.fixture(scope="module")
def tiny_run(prepared, tmp_path_factory):
    run = tmp_path_factory.mktemp("talk") / "run"
    meta_train(MetaTrainOptions(data=str(prepared), out=str(run), steps=2, overrides=TINY, quiet=True))
    return run


@pytest.mark.realdata
def test_animate_a_portrait_from_a_shared_clip(tiny_run, tmp_path, capsys):
    if not TALKING.is_dir():
        pytest.skip(f"{TALKING} is absent (../shared holds the development data; a fresh clone has none)")
    import imageio_ffmpeg

    from facesynth.cli import main
    from facesynth.models import default_model

    driver = TALKING / "videos" / "realisti-test_video.mp4"
    out = tmp_path / "talk.mp4"
    assert main(["animate", "run", "--ckpt", str(tiny_run), "--source", str(TALKING / "portraits" / "s42.jpg"),
                 "--driver", str(driver), "--out", str(out), "--max-frames", "6", "--side-by-side", "--quiet"]) == 0
    assert "6 frames at 32x32" in capsys.readouterr().out
    frames = list(imageio_ffmpeg.read_frames(str(out)))
    # metadata + 6 frames of source | driver | landmarks | output
    assert len(frames) == 7 and frames[0]["size"] == (4 * 256, 256)
    # Self-reenactment needs no source; a person checkpoint made by finetune drives too.
    assert main(["animate", "run", "--ckpt", str(tiny_run), "--self", "--driver", str(driver), "--out",
                 str(tmp_path / "self.gif"), "--max-frames", "4", "--quiet"]) == 0
    assert main(["animate", "finetune", "--ckpt", str(tiny_run), "--images", str(TALKING / "portraits" / "s1.jpg"),
                 "--out", str(tmp_path / "person"), "--steps", "2", "--quiet"]) == 0
    assert main(["animate", "run", "--ckpt", str(tmp_path / "person"), "--source",
                 str(TALKING / "portraits" / "s1.jpg"), "--driver", str(driver), "--out", str(tmp_path / "p.mp4"),
                 "--max-frames", "3", "--quiet"]) == 0
    capsys.readouterr()
    # An animal is refused with one clear line, before any work.
    animal = sorted((TALKING / "not-human").glob("*.jpg"))[0]
    assert main(["animate", "run", "--ckpt", str(tiny_run), "--source", str(animal), "--driver", str(driver),
                 "--out", str(tmp_path / "x.mp4"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "no human face found" in err and "Traceback" not in err and not (tmp_path / "x.mp4").exists()
    # A GAN checkpoint is not a talking head.
    assert main(["animate", "run", "--ckpt", str(default_model()), "--self", "--driver",
                 str(driver), "--out", str(tmp_path / "y.mp4"), "--quiet"]) == 2
    assert "not a talking-head checkpoint" in capsys.readouterr().err


def test_unreadable_driver_is_one_clear_line(tiny_run, tmp_path, capsys):
    from facesynth.cli import main

    junk = tmp_path / "driver.mp4"
    junk.write_bytes(b"this is not a video")
    assert main(["animate", "run", "--ckpt", str(tiny_run), "--self", "--driver", str(junk), "--out",
                 str(tmp_path / "o.mp4"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "driver.mp4: not a readable video" in err and "Traceback" not in err
    assert not (tmp_path / "o.mp4").exists()
