"""Progressive growing and the seed architectures (ProGAN, StyleGAN v1)."""

import json

import pytest
import torch

from facesynth import checkpoints as ckpt
from facesynth.config import GANConfig
from facesynth.nets import build_discriminator, build_generator
from facesynth.nets.growth import downsample_box
from facesynth.presets import PRESETS, get_preset
from facesynth.synthesis.generate import generate_images
from facesynth.training.growth import GrowthSchedule
from facesynth.training.loop import Trainer, TrainOptions, mixed_ws, train

ARCHS = ("progan", "stylegan1", "stylegan2")


def tiny_growing(arch: str, **kw) -> GANConfig:
    """A 16x16 network of each architecture grown from 4x4 in a few dozen images."""
    extra = {"mapping_layers": 0, "loss": "wgan-gp", "style_mixing_prob": 0.0} if arch == "progan" else {}
    base = dict(name=f"tiny-{arch}", arch=arch, resolution=16, channel_base=256, channel_max=32, z_dim=32, w_dim=32,
                mapping_layers=2, batch=8, ema_kimg=0.05, snapshot_kimg=0.1, progressive=True, start_resolution=4,
                fade_kimg=0.016, stable_kimg=0.016, batch_per_res={"4": 8, "8": 8, "16": 4})
    base.update(extra)
    base.update(kw)
    return GANConfig(**base).validate()


@pytest.mark.parametrize("arch", ARCHS)
def test_alpha_zero_is_the_upsampled_image_below(arch):
    torch.manual_seed(0)
    G = build_generator(tiny_growing(arch)).eval()
    ws = G.mapping(torch.randn(3, 32))
    with torch.no_grad():
        G.set_growth(8, 1.0)
        below = G.synthesis(ws, noise_mode="const")
        G.set_growth(16, 0.0)
        faded = G.synthesis(ws, noise_mode="const")
        G.set_growth(16, 1.0)
        full = G.synthesis(ws, noise_mode="const")
    assert below.shape[-1] == 8 and faded.shape[-1] == 16
    torch.testing.assert_close(faded, G.synthesis.upsample_image(below), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(faded, full, atol=1e-3), "the new block must change the image once faded in"


@pytest.mark.parametrize("arch", ARCHS)
def test_discriminator_at_alpha_zero_reads_the_box_downsampled_image(arch):
    torch.manual_seed(0)
    D = build_discriminator(tiny_growing(arch)).eval()
    img = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        D.set_growth(8, 1.0)
        below = D(downsample_box(img))
        D.set_growth(16, 0.0)
        faded = D(img)
        D.set_growth(16, 0.5)
        half = D(img)
    torch.testing.assert_close(faded, below, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(half, below)


@pytest.mark.parametrize("arch", ARCHS)
def test_shapes_follow_the_growth_stage(arch):
    cfg = tiny_growing(arch)
    G, D = build_generator(cfg), build_discriminator(cfg)
    z = torch.randn(2, cfg.z_dim)
    for res in (4, 8, 16):
        for alpha in (0.0, 0.3, 1.0):
            G.set_growth(res, alpha)
            D.set_growth(res, alpha)
            img = G(z)
            assert img.shape == (2, 3, res, res)
            assert D(img).shape == (2, 1)
            assert G.synthesis.output_resolution == res
    with pytest.raises(ValueError, match="8x8"):
        D(torch.randn(2, 3, 8, 8))  # D is at 16x16 now
    with pytest.raises(ValueError, match="power of two"):
        G.set_growth(12)


def test_schedule_alpha_ramps_continuously_and_reaches_one_at_the_phase_end():
    cfg = tiny_growing("stylegan1", fade_kimg=0.1, stable_kimg=0.05)
    sched = GrowthSchedule(cfg)
    kinds = [(p.resolution, p.kind) for p in sched.phases]
    assert kinds == [(4, "stable"), (8, "fade"), (8, "stable"), (16, "fade"), (16, "stable")]
    assert sched.phases[-1].end is None and sched.full_resolution_at == 300
    fade8 = sched.phases[1]
    alphas = [sched.at(n).alpha for n in range(fade8.start, fade8.end)]
    assert alphas[0] == 0.0 and all(b > a for a, b in zip(alphas, alphas[1:]))
    assert max(b - a for a, b in zip(alphas, alphas[1:])) <= 1 / 100 + 1e-12  # one image moves alpha by 1/100
    assert sched.at(fade8.end).alpha == 1.0 and sched.at(fade8.end).kind == "stable"
    assert sched.at(10**9).resolution == 16 and sched.at(10**9).alpha == 1.0
    assert sched.at(0).batch == 8 and sched.at(10**9).batch == 4
    assert [p.resolution for p in GrowthSchedule(get_preset("stylegan2-32-cpu")).phases] == [32]


def test_mixing_crosses_over_inside_the_active_layers():
    cfg = tiny_growing("stylegan1")
    G = build_generator(cfg)
    G.set_growth(8, 1.0)  # 4 of the 6 w's are in use
    torch.manual_seed(0)
    for _ in range(20):
        ws = mixed_ws(G, torch.randn(2, cfg.z_dim), prob=1.0)
        differs = [not torch.equal(ws[:, 0], ws[:, i]) for i in range(cfg.num_ws)]
        first = differs.index(True)
        assert 1 <= first < 4


def _opts(data, out, cfg, **kw):
    base = dict(data=str(data), out=str(out), preset=cfg.name, kimg=0.1, seed=5, quiet=True, tensorboard=False,
                grid_size=4, history=False, tick_kimg=0.016,
                overrides={k: v for k, v in cfg.to_dict().items() if k != "name"})
    base.update(kw)
    return TrainOptions(**base)


@pytest.mark.parametrize("arch", ARCHS)
def test_progressive_run_grows_and_resume_mid_fade_is_exact(arch, face_dataset, tmp_path, monkeypatch):
    cfg = tiny_growing(arch, snapshot_kimg=1.0, fade_kimg=0.032)
    monkeypatch.setitem(PRESETS, cfg.name, cfg)
    # Uninterrupted: 4x4 stable for 16 images, 8x8 fade 32 and stable 16, 16x16 fade 32 (batch 4), stable.
    train(_opts(face_dataset, tmp_path / "full", cfg, kimg=0.104))
    # Interrupted after 32 images, inside the 8x8 fade-in; resumed with a disturbed global RNG.
    train(_opts(face_dataset, tmp_path / "part", cfg, kimg=0.032))
    state = json.loads((ckpt.list_snapshots(tmp_path / "part")[-1] / "state.json").read_text())
    assert state["growth"]["resolution"] == 8 and state["growth"]["kind"] == "fade"
    assert 0 < state["growth"]["alpha"] < 1
    torch.manual_seed(1234)
    t = Trainer(_opts(face_dataset, tmp_path / "part", cfg, kimg=0.104, resume="auto", overrides={}))
    assert t.growth.alpha == state["growth"]["alpha"] and t.G.synthesis.growth_alpha == state["growth"]["alpha"]
    t.run()
    a, b = ckpt.read_model_file(tmp_path / "full")[1], ckpt.read_model_file(tmp_path / "part")[1]
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
    lines = [json.loads(x) for x in (tmp_path / "full" / "stats.jsonl").read_text().splitlines()]
    assert {x["resolution"] for x in lines} >= {8, 16}
    opts = json.loads((tmp_path / "full" / "training_options.json").read_text())
    assert [p["resolution"] for p in opts["schedule"]] == [4, 8, 8, 16, 16]
    # The generator reloads at the stage it was saved at.
    G = ckpt.load_generator(tmp_path / "full")
    assert G.growth_state()["resolution"] == 16
    assert generate_images(G, [0, 1]).shape == (2, 3, 16, 16)


@pytest.mark.parametrize("name", ["progan-64", "stylegan1-64", "progan-32-paper", "progan-256-paper",
                                  "stylegan1-256-paper"])
def test_each_new_preset_trains_a_few_steps_and_generates(name, face_dataset, tmp_path):
    cfg = get_preset(name)
    start = cfg.start_resolution
    # Two steps at the preset's first stage with a small batch (the networks are the preset's own).
    out = tmp_path / "run"
    overrides = {"batch_per_res": {str(start): 4}, "snapshot_kimg": 1.0}
    t = Trainer(TrainOptions(data=str(face_dataset), out=str(out), preset=name, kimg=0.008, quiet=True,
                             tensorboard=False, grid_size=2, history=False, overrides=overrides))
    assert t.growth.resolution == start
    last = t.run()
    assert last["kimg"] == pytest.approx(0.008) and last["resolution"] == start
    G = ckpt.load_generator(out)
    img = generate_images(G, [0, 1], truncation_psi=0.7)
    assert img.shape == (2, 3, start, start) and torch.isfinite(img).all()
