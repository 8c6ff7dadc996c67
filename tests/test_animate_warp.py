"""The warping talking head: TPS motion, the networks, meta-training, fine-tuning, evaluation, export."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from test_animate import TALKING, face_like, synthetic_clips

from facesynth.animate.config import WARP_PRESETS, WarpHeadConfig, get_preset
from facesynth.animate.warp_model import source_grids
from facesynth.nets.tps import face_local, identity_grid, solve_tps, to_grid_units, tps_grid
from facesynth.animate.train import MetaTrainOptions, meta_train
from facesynth.errors import FacesynthError
from facesynth.nets.talking_warp import WarpGenerator

TINY = dict(resolution=32, channels=[4, 8], motion_channels=[4, 8], d_channels=[4, 8], res_blocks=1, batch=2,
            shots=2, snapshot_steps=2, finetune_steps=2)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return synthetic_clips(tmp_path_factory.mktemp("clips"))


def tiny_cfg(**kw) -> WarpHeadConfig:
    return WarpHeadConfig(**{**TINY, **kw}).validate()


def test_tps_carries_landmarks_and_keeps_the_border():
    rng = np.random.default_rng(0)
    driving = torch.tensor(face_like(rng), dtype=torch.float32)[None]
    source = driving + torch.tensor([3.0, -2.0])
    # The spline itself maps each driving landmark (nearly) onto the source's.
    ctrl, tgt = to_grid_units(driving, 64), to_grid_units(source, 64)
    coef = solve_tps(ctrl, tgt, regularisation=0.0)
    assert coef.shape == (1, 71, 2)
    grid = tps_grid(driving, source, 64)
    ident = identity_grid(64)
    assert torch.allclose(tps_grid(driving, driving, 64)[0], ident, atol=1e-5)
    # Near the face's centre the shift is the landmarks'; the border barely moves.
    shift = (grid[0] - ident) * 32
    assert torch.allclose(shift[32, 32], torch.tensor([3.0, -2.0]), atol=0.3)
    assert shift[0, 0].abs().max() < 0.1 and shift[63, 32].abs().max() < 0.5
    # A closed mouth (inner lip points on top of each other) is still solvable.
    closed = driving.clone()
    closed[0, 65:68] = closed[0, 61:64].flip(0)
    assert torch.isfinite(tps_grid(closed, source, 64, 32)).all()


def test_tps_smoothing_bends_less_between_jittered_landmarks():
    rng = np.random.default_rng(2)
    driving = torch.tensor(face_like(rng), dtype=torch.float32)[None]
    jitter = torch.tensor(rng.normal(0, 0.7, (1, 68, 2)), dtype=torch.float32)
    source = driving + torch.tensor([3.0, -2.0]) + jitter

    def bending(grid):  # second differences of the field, summed: how much it bends
        return ((grid[:, 2:] - 2 * grid[:, 1:-1] + grid[:, :-2]).abs().sum()
                + (grid[:, :, 2:] - 2 * grid[:, :, 1:-1] + grid[:, :, :-2]).abs().sum())

    exact, smooth = tps_grid(driving, source, 64), tps_grid(driving, source, 64, regularisation=0.05)
    assert bending(smooth) < 0.8 * bending(exact)
    # Smoothing still carries the face by the landmarks' common motion.
    shift = (smooth[0] - identity_grid(64)) * 32
    assert torch.allclose(shift[32, 32], torch.tensor([3.0, -2.0]), atol=0.6)
    cfg = tiny_cfg(tps_smoothing=0.05)
    assert torch.equal(source_grids(driving, source[:, None], cfg)[:, 0],
                       face_local(tps_grid(driving, source, 32, 16, 0.05), driving, 32, cfg.tps_falloff))


def test_untrained_motion_is_the_tps_warp_and_sources_are_weighed():
    cfg = tiny_cfg()
    G = WarpGenerator(cfg).eval()
    rng = np.random.default_rng(1)
    lm = torch.tensor(np.stack([face_like(rng, size=32) for _ in range(2)]), dtype=torch.float32)
    tps = tps_grid(lm[:1], lm[1:], 32, 16)
    src = torch.rand(1, 3, 32, 32) * 2 - 1
    drawings = torch.zeros(1, 3, 32, 32)
    grid, occlusion, confidence = G.motion_fields(src, drawings, drawings, tps)
    assert torch.equal(grid, tps)  # the correction starts at zero
    assert occlusion.shape == (1, 1, 16, 16) and confidence.shape == (1, 1, 16, 16)
    with torch.no_grad():
        once = G(src[:, None], drawings[:, None], drawings, tps[:, None])
        twice = G(src[:, None].repeat(1, 2, 1, 1, 1), drawings[:, None].repeat(1, 2, 1, 1, 1), drawings,
                  tps[:, None].repeat(1, 2, 1, 1, 1))
    assert once.shape == (1, 3, 32, 32)
    assert torch.allclose(once, twice, atol=1e-5)  # the same source twice: softmax halves, sums to one


def test_config_rejects_bad_values():
    assert "talking-warp-128" in WARP_PRESETS and get_preset("talking-warp-128").resolution == 128
    with pytest.raises(FacesynthError, match="channels"):
        WarpHeadConfig(resolution=32, channels=[4, 8, 16, 32]).validate()
    with pytest.raises(FacesynthError, match="flow_scale"):
        tiny_cfg(flow_scale=0.0)
    with pytest.raises(FacesynthError, match="tps_smoothing"):
        tiny_cfg(tps_smoothing=0.0)
    with pytest.raises(FacesynthError, match="unknown talking-head preset"):
        get_preset("talking-warp-7")


def test_eyes_term_weighs_the_eyes_and_brows_alone(prepared, tmp_path):
    from facesynth.animate.losses import EYES_AND_BROWS, landmark_region_weights, region_l1

    lm = torch.tensor(face_like(np.random.default_rng(3)), dtype=torch.float32)[None]
    w = landmark_region_weights(lm, 64)
    assert w.shape == (1, 1, 64, 64)
    for i in EYES_AND_BROWS:  # each eye and brow landmark lies in the region
        x, y = lm[0, i].round().long().tolist()
        assert w[0, 0, y, x] > 0.9
    x, y = lm[0, 8].round().long().tolist()  # the chin does not
    assert w[0, 0, y, x] < 0.01
    real = torch.zeros(1, 3, 64, 64)
    chin = real.clone()
    chin[..., y - 2:y + 3, x - 2:x + 3] = 1
    eyes = real + w  # wrong exactly where the region is
    assert region_l1(real, real, w) == 0 and region_l1(chin, real, w) < 1e-3
    assert region_l1(eyes, real, w) > 10 * torch.nn.functional.l1_loss(eyes, real)
    # A run with the term logs it, finite.
    run = tmp_path / "run"
    meta_train(MetaTrainOptions(data=str(prepared), out=str(run), preset="talking-warp-128", steps=2, quiet=True,
                                tick_steps=1, overrides={**TINY, "eyes_weight": 10.0}, exclude=["clip2"]))
    lines = [json.loads(x) for x in (run / "stats.jsonl").read_text().splitlines()]
    assert all(np.isfinite(x["loss/eyes"]) and x["loss/eyes"] > 0 for x in lines)
    with pytest.raises(FacesynthError, match="eyes_weight"):
        tiny_cfg(eyes_weight=-1.0)


def _last_model(run: Path) -> dict:
    return load_file(str(sorted(run.glob("snapshot-*"))[-1] / "model.safetensors"))


def test_warp_training_resumes_exactly(prepared, tmp_path):
    common = dict(data=str(prepared), preset="talking-warp-128", overrides=TINY, quiet=True, tick_steps=1,
                  exclude=["clip2"])
    meta_train(MetaTrainOptions(out=str(tmp_path / "a"), steps=4, **common))
    meta_train(MetaTrainOptions(out=str(tmp_path / "b"), steps=2, **common))
    meta_train(MetaTrainOptions(out=str(tmp_path / "b"), steps=4, resume="auto",
                                **{**common, "preset": "talking-64-cpu"}))  # the checkpoint says which family
    a, b = _last_model(tmp_path / "a"), _last_model(tmp_path / "b")
    assert a.keys() == b.keys() and any(k.startswith("D.") for k in a)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    lines = [json.loads(x) for x in (tmp_path / "a" / "stats.jsonl").read_text().splitlines()]
    assert {"loss/pixel", "loss/ssim", "loss/adv", "loss/fm", "loss/D"} <= set(lines[-1])


@pytest.fixture(scope="module")
def warp_run(prepared, tmp_path_factory):
    run = tmp_path_factory.mktemp("warp") / "run"
    meta_train(MetaTrainOptions(data=str(prepared), out=str(run), preset="talking-warp-128", steps=2,
                                overrides=TINY, quiet=True, exclude=["clip1"]))
    return run


def test_evaluate_finetune_and_export(prepared, warp_run, tmp_path):
    from facesynth.animate.episodes import load_videos
    from facesynth.animate.evaluate import evaluate, format_per_clip, format_table
    from facesynth.animate.reenact import Portrait, load_talker
    from facesynth.animate.warp_finetune import finetune_warp, save_warp_person
    from facesynth.animate.warp_model import export_warp_model, heldout_of, load_warp_generator

    report = evaluate(str(warp_run), str(prepared), shots=(1, 2), targets=3, quiet=True, run_frames=4)
    assert set(report["results"]) == {"1-shot", "2-shot", "baseline", "tps", "tps-face"}
    assert report["clips"] == ["clip1"]
    rows = report["results"]
    assert rows["baseline"]["frame_change"] == 0 and rows["1-shot"]["frame_change"] > 0
    assert "frame change" in format_table(report)
    one = report["per_clip"]["clip1"]  # one clip: its rows are all the rows
    assert all(one[n][k] == rows[n][k] for n in rows for k in ("frames", "ssim", "identity"))
    assert "| clip1 | " in format_per_clip(report)

    out = export_warp_model(warp_run, tmp_path / "warp.safetensors")
    tensors = load_file(str(out))
    assert all(k.startswith("G.") and v.dtype == torch.float16 for k, v in tensors.items() if v.is_floating_point())
    assert heldout_of(out) == ["clip1"]
    assert evaluate(str(out), str(prepared), shots=(1,), targets=2, quiet=True, run_frames=3)["clips"] == ["clip1"]

    v = load_videos(prepared, 32, include=["clip1"], quiet=True)[0]
    portraits = [Portrait("f0", v.frames[0].permute(1, 2, 0).numpy(), v.drawings[0].permute(1, 2, 0).numpy(),
                          v.landmarks[0])]
    _, cfg, G, _, _ = load_warp_generator(out)
    tuned, info = finetune_warp(G, cfg, portraits, steps=2, quiet=True)
    assert info["steps"] == 2 and not torch.equal(next(tuned.parameters()), next(G.parameters()))
    person = save_warp_person(tuned, cfg, portraits, info, tmp_path / "person")
    talker, meta = load_talker(person, None)  # the person carries its photos
    assert meta["kind"] == "facesynth-talking-warp-person"
    frames = list(talker.render(v.landmarks[:3]))
    assert len(frames) == 3 and frames[0].shape == (32, 32, 3) and frames[0].dtype == np.uint8
    with pytest.raises(FacesynthError, match="needs --source"):
        load_talker(warp_run, None)


def test_init_from_keeps_the_weights_and_the_heldout_clips_and_adds_a_zero_residual(prepared, warp_run, tmp_path):
    from facesynth.animate.train import trainer_class
    from facesynth.animate.warp_model import load_warp_generator

    opts = MetaTrainOptions(data=str(prepared), out=str(tmp_path / "more"), preset=None, init_from=str(warp_run),
                            steps=1, overrides={"residual": True}, quiet=True)
    trainer = trainer_class(opts)(opts)
    assert trainer.exclude == ["clip1"] and "clip1" not in [v.name for v in trainer.videos]  # the source's held-out
    old = _last_model(warp_run)
    for name, net in trainer.nets.items():  # G and D as they were, the residual head new and at zero
        own = net.state_dict()
        assert {f"{name}.{k}" for k in own if f"{name}.{k}" not in old} == (
            {"G.to_residual.weight", "G.to_residual.bias"} if name == "G" else set())
        assert all(torch.equal(v, old[f"{name}.{k}"]) for k, v in own.items() if f"{name}.{k}" in old)
    assert not trainer.nets["G"].to_residual.weight.any()

    # A zero residual renders exactly what the model it started from renders; a residual adds to it.
    _, cfg, G, _, _ = load_warp_generator(warp_run)
    G2 = trainer.nets["G"].eval()
    rng = np.random.default_rng(2)
    lm = torch.tensor(np.stack([face_like(rng, size=32) for _ in range(2)]), dtype=torch.float32)
    tps = tps_grid(lm[:1], lm[1:], 32, 16)[:, None]
    src, drawings = torch.rand(1, 1, 3, 32, 32) * 2 - 1, torch.rand(1, 1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(G.eval()(src, drawings, drawings[:, 0], tps), G2(src, drawings, drawings[:, 0], tps))
        G2.to_residual.bias.fill_(0.25)
        assert torch.allclose(G2(src, drawings, drawings[:, 0], tps), G(src, drawings, drawings[:, 0], tps) + 0.25)

    trainer.run()  # and it trains
    assert json.loads((sorted((tmp_path / "more").glob("snapshot-*"))[-1] / "state.json").read_text())["step"] == 1

    with pytest.raises(FacesynthError, match="nothing-here"):
        meta_train(MetaTrainOptions(data=str(prepared), out=str(tmp_path / "x"), preset="talking-warp-128",
                                    init_from=str(tmp_path / "nothing-here"), steps=1, quiet=True))


def test_jitter_moves_landmarks_with_the_picture():
    from facesynth.animate.warp_finetune import jittered

    img = torch.full((1, 3, 32, 32), -1.0)
    img[0, :, 10, 20] = 1.0  # a bright pixel, and a landmark on it
    lm = torch.zeros(1, 68, 2)
    lm[0, :] = torch.tensor([20.0, 10.0])
    moved, moved_lm = jittered(img, lm, torch.Generator().manual_seed(3))
    y, x = np.unravel_index(moved[0, 0].argmax().item(), (32, 32))
    assert abs(moved_lm[0, 0, 0].item() - x) <= 1 and abs(moved_lm[0, 0, 1].item() - y) <= 1

    # Face-local (the model's own motion): the face moves with its landmarks, the far background stays.
    r = 64
    face = torch.tensor(face_like(np.random.default_rng(4), size=r), dtype=torch.float32)[None]
    img = torch.full((1, 3, r, r), -1.0)
    nx, ny = face[0, 30].round().long().tolist()  # the nose tip
    img[0, :, ny - 1:ny + 2, nx - 1:nx + 2] = 1.0
    img[0, :, 0:3, 0:3] = 0.5
    moved, moved_lm = jittered(img, face, torch.Generator().manual_seed(3), tiny_cfg(resolution=r))
    inner = moved[0, 0].clone()
    inner[:8, :8] = -1
    y, x = np.unravel_index(inner.argmax().item(), (r, r))
    assert abs(moved_lm[0, 30, 0].item() - x) <= 1.5 and abs(moved_lm[0, 30, 1].item() - y) <= 1.5
    assert (moved_lm - face).abs().max() > 0.5  # it did move
    assert torch.allclose(moved[0, :, 0, 0], torch.tensor(0.5), atol=1e-3)


def test_heldout_split_is_fixed_and_skips_people_seen_twice(tmp_path):
    from facesynth.animate.heldout import SAME_PERSON_COLUMN, heldout_clips

    rows = ["file\tseconds\t" + SAME_PERSON_COLUMN]
    rows += [f"c{i}.mp4\t{2 + i}\t{'no' if i % 3 else 'yes (c0)'}" for i in range(12)]
    manifest = tmp_path / "manifest.tsv"
    manifest.write_text("\n".join(rows) + "\n")
    picked = heldout_clips(manifest, count=3)
    assert len(picked) == 3 and picked == heldout_clips(manifest, count=3)
    assert all(int(p[1:]) % 3 and int(p[1:]) >= 1 for p in picked)
    with pytest.raises(FacesynthError, match="only"):
        heldout_clips(manifest, count=20)
    (tmp_path / "bad.tsv").write_text("a\tb\n1\t2\n")
    with pytest.raises(FacesynthError, match="bad.tsv: not a clips manifest"):
        heldout_clips(tmp_path / "bad.tsv")


@pytest.mark.realdata
def test_bundled_model_animates_a_portrait_without_ckpt(tmp_path, capsys):
    if not TALKING.is_dir():
        pytest.skip(f"{TALKING} is absent (../shared holds the development data; a fresh clone has none)")
    from facesynth.cli import main
    from facesynth.models import default_talking_model

    if default_talking_model() is None:
        pytest.skip("this installation has no bundled talking-head model")
    out = tmp_path / "talk.mp4"
    assert main(["animate", "run", "--source", str(TALKING / "portraits" / "s42.jpg"), "--driver",
                 str(TALKING / "videos" / "realisti-test_video.mp4"), "--out", str(out), "--max-frames", "4",
                 "--quiet", "--threads", "1"]) == 0
    assert "4 frames at 128x128" in capsys.readouterr().out and out.stat().st_size > 0
    # A person fine-tuned from the bundled model carries its photo: run needs no --source.
    assert main(["animate", "finetune", "--ckpt", str(default_talking_model()), "--images",
                 str(TALKING / "portraits" / "s3.jpg"), "--out", str(tmp_path / "person"), "--steps", "2",
                 "--quiet", "--threads", "1"]) == 0
    assert main(["animate", "run", "--ckpt", str(tmp_path / "person"), "--driver",
                 str(TALKING / "videos" / "realisti-test_video.mp4"), "--out", str(tmp_path / "p.mp4"),
                 "--max-frames", "3", "--quiet", "--threads", "1"]) == 0
    assert "3 frames at 128x128" in capsys.readouterr().out
