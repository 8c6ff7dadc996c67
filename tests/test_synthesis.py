"""Style mixing, stochastic variation, interpolation, export and warm starts, on tiny networks."""

import copy

import numpy as np
import pytest
import torch
from PIL import Image

from facesynth import checkpoints as ckpt
from facesynth.cli import main
from facesynth.errors import FacesynthError
from facesynth.nets import build_discriminator, build_generator
from facesynth.presets import get_preset
from facesynth.synthesis import interpolate, noise, styles
from facesynth.synthesis.generate import seed_latents
from facesynth.training.loop import TrainOptions, train
from facesynth.training.warmstart import warm_start


def tiny(resolution=64, **kw):
    return get_preset("tiny").replace(resolution=resolution, **kw).validate("test config")


@pytest.fixture(scope="module")
def G64():
    torch.manual_seed(0)
    g = build_generator(tiny(64)).eval().requires_grad_(False)
    # Noise strengths start at zero; give them some so noise does something.
    for _, m in noise.noise_layers(g):
        m.strength.data.fill_(0.5)
    return g


def test_layer_groups_follow_resolution(G64):
    # StyleGAN2 at 64²: w0 = 4² conv, then two convs per resolution, the last w feeds the 64² toRGB.
    assert styles.layer_resolutions(G64) == [4, 8, 8, 16, 16, 32, 32, 64, 64, 64]
    assert styles.parse_style_layers(G64, "coarse") == [0, 1, 2]
    assert styles.parse_style_layers(G64, "middle") == [3, 4, 5, 6]
    assert styles.parse_style_layers(G64, "fine") == [7, 8, 9]
    assert styles.parse_style_layers(G64, "coarse+fine") == [0, 1, 2, 7, 8, 9]
    assert styles.parse_style_layers(G64, "0-1,5") == [0, 1, 5]
    for bad in ("huge", "3-1", "0-10", ""):
        with pytest.raises(FacesynthError):
            styles.parse_style_layers(G64, bad)


def test_groups_a_model_lacks_are_named_in_the_error():
    g = build_generator(tiny(16))
    assert styles.available_groups(g) == ["coarse", "middle"]
    with pytest.raises(FacesynthError, match="no fine layers"):
        styles.parse_style_layers(g, "fine")


def test_progan_cannot_mix():
    g = build_generator(get_preset("progan-64"))
    with pytest.raises(FacesynthError, match="style-based"):
        styles.parse_style_layers(g, "coarse")


def test_mixing_takes_the_chosen_layers_from_the_style_face(G64):
    src = styles.seed_ws(G64, [1, 2])
    sty = styles.seed_ws(G64, [10, 11, 12])
    layers = styles.parse_style_layers(G64, "coarse")
    mixed = styles.mix_ws(src, sty, layers)
    assert mixed.shape == (2, 3, 10, G64.cfg.w_dim)
    assert torch.equal(mixed[1, 2, :3], sty[2, :3]) and torch.equal(mixed[1, 2, 3:], src[1, 3:])
    out = styles.style_mix(G64, src, sty, list(range(10)))
    assert out["mixed"].shape == (2, 3, 3, 64, 64)
    # Every layer from the style face: the style face itself, whatever the source.
    torch.testing.assert_close(out["mixed"][0], out["styles"], rtol=0, atol=1e-5)
    again = styles.style_mix(G64, src, sty, layers)
    assert torch.equal(again["mixed"], styles.style_mix(G64, src, sty, layers)["mixed"])


def test_coarse_styles_change_more_than_fine_ones(G64):
    """Coarse layers shape everything after them; fine ones only the last few."""
    src, sty = styles.seed_ws(G64, list(range(8))), styles.seed_ws(G64, list(range(100, 108)))
    base = styles.synthesize(G64, src)

    def change(group):
        mixed = styles.style_mix(G64, src, sty, styles.parse_style_layers(G64, group))["mixed"]
        return (torch.diagonal(mixed, dim1=0, dim2=1).permute(3, 0, 1, 2) - base).abs().mean()

    assert change("coarse") > change("fine") > 0


def test_noise_only_where_asked(G64):
    ws = styles.seed_ws(G64, [3])
    none = noise.noise_draws(G64, ws, 4, variant="none")
    assert torch.equal(none[0], none[3])
    torch.testing.assert_close(none[0], G64.synthesis(ws, noise_mode="none")[0])
    a = noise.noise_draws(G64, ws, 4, seed=5)
    assert not torch.equal(a[0], a[1])
    assert torch.equal(a, noise.noise_draws(G64, ws, 4, seed=5))  # reproducible
    assert not torch.equal(a, noise.noise_draws(G64, ws, 4, seed=6))
    # The hooks are gone afterwards: random noise acts everywhere again.
    assert not torch.equal(G64.synthesis(ws), G64.synthesis(ws))
    res = noise.stochastic_variation(G64, ws, draws=6)
    assert list(res) == ["all", "coarse", "middle", "fine", "none"]
    assert float(res["none"]["std"].max()) == 0.0
    assert all(float(res[v]["std"].mean()) > 0 for v in ("all", "coarse", "middle", "fine"))
    assert res["all"]["std"].shape == (64, 64)


def test_progan_has_no_noise():
    with pytest.raises(FacesynthError, match="no noise"):
        g = build_generator(get_preset("progan-64"))
        noise.stochastic_variation(g, torch.zeros(1, 1, 512), draws=4)


def test_slerp_follows_the_great_circle_and_hits_the_ends():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(4, 32, generator=g), torch.randn(4, 32, generator=g)
    t = torch.tensor([[0.0], [0.3], [0.7], [1.0]])
    out = interpolate.slerp(a, b, t)
    torch.testing.assert_close(out[0], a[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(out[3], b[3], atol=1e-4, rtol=0)
    torch.testing.assert_close(out.norm(dim=1), torch.lerp(a.norm(dim=1), b.norm(dim=1), t[:, 0]))
    ua, ub = a / a.norm(dim=1, keepdim=True), b / b.norm(dim=1, keepdim=True)
    unit = interpolate.slerp(ua, ub, t)  # unit vectors stay on the sphere, at angle t * omega from a
    torch.testing.assert_close(unit.norm(dim=1), torch.ones(4))
    omega = torch.acos((ua * ub).sum(1))
    torch.testing.assert_close(torch.acos((unit * ua).sum(1).clamp(-1, 1)), t[:, 0] * omega, atol=1e-3, rtol=0)


@pytest.mark.parametrize("space", ["w", "z"])
def test_loop_passes_through_every_seed_and_closes(G64, space):
    seeds = [4, 8, 15]
    ws = interpolate.loop_ws(G64, seeds, frames=30, space=space)
    assert ws.shape == (30, 10, G64.cfg.w_dim)
    keys = styles.seed_ws(G64, seeds)
    for k in range(3):  # frames 0, 10, 20 sit on the seeds
        torch.testing.assert_close(ws[10 * k], keys[k], rtol=1e-4, atol=1e-4)
    # Smooth: no step between neighbours is much larger than the typical one, including the wrap-around.
    steps = (ws.roll(-1, 0) - ws).norm(dim=(1, 2))
    assert steps.max() < 3 * steps.mean()


def test_interpolation_needs_two_seeds(G64):
    with pytest.raises(FacesynthError):
        interpolate.loop_ws(G64, [1], 10)


def test_mix_noise_interpolate_commands(tiny_run, tmp_path, capsys):
    ck = ["--ckpt", str(tiny_run)]
    assert main(["mix", *ck, "--rows", "1,2", "--cols", "3-5", "--out", str(tmp_path / "m.png")]) == 0
    img = Image.open(tmp_path / "m.png")
    # 16² tiles upscaled to 128; 3 style columns + the source column, a label strip on the left;
    # a top row + 2 sources × 2 bands (the 16² model has coarse and middle layers).
    assert img.height == 128 * 5 and img.width > 128 * 4
    assert main(["mix", *ck, "--styles", "fine", "--out", str(tmp_path / "f.png")]) == 2
    assert "no fine layers" in capsys.readouterr().err
    assert main(["noise", *ck, "--seed", "7", "--draws", "4", "--out", str(tmp_path / "n")]) == 0
    assert {"noise.png", "draws.png", "noise.json", "std-all.png", "std-none.png"} <= {
        p.name for p in (tmp_path / "n").iterdir()}
    assert main(["interpolate", *ck, "--seeds", "1,2", "--seconds", "1", "--fps", "6", "--quiet",
                 "--trunc", "0.7", "--trunc-cutoff", "2", "--out", str(tmp_path / "w.gif")]) == 0
    gif = Image.open(tmp_path / "w.gif")
    assert gif.n_frames == 6 and gif.width == 256
    assert main(["interpolate", *ck, "--seeds", "1,2", "--seconds", "1", "--fps", "8", "--quiet",
                 "--out", str(tmp_path / "w.mp4")]) == 0
    assert (tmp_path / "w.mp4").read_bytes()[4:8] == b"ftyp"
    assert main(["interpolate", *ck, "--out", str(tmp_path / "w.avi")]) == 2


def test_export_fp16_is_smaller_and_generates_the_same_faces(tiny_run, tmp_path):
    out = tmp_path / "g16.safetensors"
    assert main(["export", "--ckpt", str(tiny_run), "--fp16", "--out", str(out)]) == 0
    full = ckpt.resolve_checkpoint(tiny_run)
    assert out.stat().st_size < full.stat().st_size / 4  # G_ema alone, at half precision
    z = seed_latents([1, 2, 3], 32)
    a = ckpt.load_generator(full)(z, noise_mode="const")
    b = ckpt.load_generator(out)(z, noise_mode="const")
    torch.testing.assert_close(a, b, rtol=0, atol=0.02)


def test_growing_a_trained_model_starts_where_it_left_off(tiny_run, tmp_path):
    """A 16² run grown to 32²: at α = 0 the new G draws the old faces (up-sampled) and the new D
    scores the old way; the run then trains on."""
    old_G = ckpt.load_generator(tiny_run)
    cfg = tiny(32, progressive=True, start_resolution=16, fade_kimg=0.016, stable_kimg=0.016)
    G, D = build_generator(cfg), build_discriminator(cfg)
    G_ema = copy.deepcopy(G)
    report = warm_start({"G": G, "D": D, "G_ema": G_ema}, str(tiny_run), cfg, quiet=True)
    assert report["from_resolution"] == 16
    assert any(k.startswith("synthesis.blocks.3.") for k in report["new"]["G"])
    assert any(k.startswith("blocks.0.") for k in report["new"]["D"])
    z = seed_latents([5, 6], 32)
    G_ema.set_growth(32, 0.0)
    want = G_ema.synthesis.upsample_image(old_G(z, noise_mode="const"))
    torch.testing.assert_close(G_ema(z, noise_mode="const"), want, rtol=0, atol=1e-5)
    _, tensors = ckpt.read_model_file(ckpt.resolve_checkpoint(tiny_run))
    old_D = build_discriminator(ckpt.read_model_file(ckpt.resolve_checkpoint(tiny_run))[0])
    ckpt.load_module_tensors(old_D, tensors, "D", "test")
    D.set_growth(16, 1.0)
    img = torch.randn(4, 3, 16, 16)
    torch.testing.assert_close(D(img), old_D(img))


def test_init_from_trains_and_refuses_mismatches(tiny_run, face_dataset, tmp_path):
    grow = {"resolution": 32, "progressive": True, "start_resolution": 16, "fade_kimg": 0.016, "stable_kimg": 0.016}
    last = train(TrainOptions(data=str(face_dataset), out=str(tmp_path / "ok"), preset="tiny", kimg=0.048,
                              quiet=True, tensorboard=False, init_from=str(tiny_run), overrides=grow))
    assert last["kimg"] >= 0.048
    assert ckpt.load_generator(tmp_path / "ok")(seed_latents([1], 32)).shape == (1, 3, 32, 32)
    out = tmp_path / "grown"
    with pytest.raises(FacesynthError, match="z_dim"):
        train(TrainOptions(data=str(face_dataset), out=str(out), preset="stylegan2-32-cpu", kimg=0.016,
                           quiet=True, tensorboard=False, init_from=str(tiny_run)))
    with pytest.raises(FacesynthError, match="only be grown"):
        train(TrainOptions(data=str(face_dataset), out=str(tmp_path / "small"), preset="tiny", kimg=0.016,
                           quiet=True, tensorboard=False, init_from=str(tiny_run),
                           overrides={"resolution": 8}))


def test_bundled_model_is_the_default_and_small(tmp_path, monkeypatch):
    from facesynth.models import MODEL_CARD, default_model

    path = default_model()
    if path is None:
        pytest.skip("this installation carries no bundled model")
    assert path.stat().st_size <= 25 * 2**20 and MODEL_CARD.is_file()
    monkeypatch.delenv("FACESYNTH_CKPT", raising=False)
    assert main(["generate", "--seeds", "0-3", "--trunc", "0.7", "--out", str(tmp_path / "a.png")]) == 0
    assert main(["generate", "--seeds", "0-3", "--trunc", "0.7", "--out", str(tmp_path / "b.png")]) == 0
    a, b = (np.asarray(Image.open(tmp_path / n)) for n in ("a.png", "b.png"))
    assert a.shape == (128, 128, 3) and np.array_equal(a, b)  # 2x2 faces of 64²


def test_bundled_model_mixing_semantics():
    """On the trained model: a coarse mix takes the style face's layout (low frequencies) and keeps the
    source's colours closer than a random face's; a fine mix keeps the source's layout."""
    from facesynth.models import default_model

    if default_model() is None:
        pytest.skip("this installation carries no bundled model")
    G = ckpt.load_generator(default_model())
    src, sty = styles.seed_ws(G, list(range(12)), 0.7), styles.seed_ws(G, list(range(100, 112)), 0.7)
    base, style_img = styles.synthesize(G, src), styles.synthesize(G, sty)

    def layout(x):  # 8x8 grey image with its mean removed: pose, face shape and position
        g = torch.nn.functional.avg_pool2d(x.mean(1, keepdim=True), x.shape[-1] // 8).flatten(1)
        return g - g.mean(1, keepdim=True)

    def colour(x):  # mean and spread of each channel
        return torch.cat([x.mean((2, 3)), x.std((2, 3))], 1)

    def dist(f, a, b):
        return (f(a) - f(b)).norm(dim=1).mean()

    coarse = styles.style_mix(G, src, sty, styles.parse_style_layers(G, "coarse"))["mixed"]
    coarse = torch.diagonal(coarse, dim1=0, dim2=1).permute(3, 0, 1, 2)
    assert dist(layout, coarse, style_img) < dist(layout, coarse, base)
    assert dist(colour, coarse, base) < dist(colour, style_img, base)
    fine = styles.style_mix(G, src, sty, styles.parse_style_layers(G, "fine"))["mixed"]
    fine = torch.diagonal(fine, dim1=0, dim2=1).permute(3, 0, 1, 2)
    assert dist(layout, fine, base) < dist(layout, fine, style_img)


def _pixel_distance(a, b):
    """A cheap differentiable stand-in for the perceptual distance."""
    pool = torch.nn.functional.avg_pool2d
    return (pool(a, 4) - pool(b, 4)).square().mean(dim=(1, 2, 3))


@pytest.mark.parametrize("space", ["w", "w+"])
def test_projection_finds_a_generated_face(tiny_run, space):
    from facesynth.metrics.similarity import psnr
    from facesynth.synthesis.project import ProjectionSettings, project

    G = ckpt.load_generator(tiny_run)
    target = G(seed_latents([42], 32), noise_mode="const")
    before = {n: b.clone() for n, b in G.named_buffers()}
    s = ProjectionSettings(space=space, steps=60, lr=0.1, record_every=20)
    proj = project(G, target, _pixel_distance, s, quiet=True)
    assert proj.ws.shape == (1, G.num_ws, 32)
    if space == "w":
        assert torch.equal(proj.ws[:, 0], proj.ws[:, -1])
    assert len(proj.frames) == 4 and len(proj.losses) == 60
    assert proj.losses[-1]["pixel"] < proj.losses[0]["pixel"]
    start = G.synthesis(G.mapping.w_avg.view(1, 1, -1).expand(1, G.num_ws, -1), noise_mode="const")
    assert psnr(proj.image, target) > psnr(start, target)
    for n, b in G.named_buffers():  # the generator's own noise maps are back in place
        assert torch.equal(b, before[n])
    for n in proj.noise:  # normalised
        assert abs(float(n.mean())) < 1e-4 and abs(float(n.std()) - 1) < 0.2


def test_noise_regularization_prefers_white_noise():
    from facesynth.synthesis.project import noise_regularization

    g = torch.Generator().manual_seed(0)
    white = torch.randn(1, 1, 32, 32, generator=g)
    smooth = torch.nn.functional.interpolate(torch.randn(1, 1, 8, 8, generator=g), size=32, mode="bilinear")
    smooth = (smooth - smooth.mean()) / smooth.std()
    assert noise_regularization([white]) < noise_regularization([smooth]) / 10


def test_project_command_and_mixing_a_saved_latent(tiny_run, tmp_path, capsys):
    from PIL import Image

    from facesynth.synthesis.generate import generate_images

    G = ckpt.load_generator(tiny_run)
    photo = tmp_path / "face.png"
    Image.fromarray((generate_images(G, [7])[0].permute(1, 2, 0).numpy() * 127.5 + 127.5).clip(0, 255)
                    .astype(np.uint8)).resize((64, 64)).save(photo)
    out = tmp_path / "proj"
    assert main(["project", "--ckpt", str(tiny_run), "--target", str(photo), "--out", str(out), "--no-align",
                 "--steps", "4", "--no-identity", "--quiet"]) == 0
    assert {"latent.npz", "target.png", "reconstruction.png", "compare.png", "optimisation.mp4",
            "report.json"} <= {p.name for p in out.iterdir()}
    import json

    report = json.loads((out / "report.json").read_text())
    assert report["distance"].startswith("inception") and 0 < report["ssim"] <= 1
    assert main(["mix", "--ckpt", str(tiny_run), "--rows", f"{out / 'latent.npz'},3", "--cols", "5,6",
                 "--out", str(tmp_path / "m.png")]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["rows"] == ["latent", "seed 3"]
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, ws=np.zeros((1, 3, 32), np.float32))
    assert main(["mix", "--ckpt", str(tiny_run), "--rows", str(wrong), "--out", str(tmp_path / "x.png")]) == 2
    assert "does not fit this model" in capsys.readouterr().err
    assert main(["mix", "--ckpt", str(tiny_run), "--rows", "nothing.jpg", "--out", str(tmp_path / "x.png")]) == 2
