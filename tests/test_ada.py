"""Adaptive discriminator augmentation: the augmentation pipe and the p controller."""

import json
import math

import pytest
import torch

from facesynth.errors import FacesynthError
from facesynth.training.ada import PRESETS, AdaController, AugmentPipe

ATOL = 1e-5  # bilinear sampling of integer moves is exact up to float rounding of the grid


def images(n=8, c=3, h=16, w=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, c, h, w, generator=g) * 2 - 1


def gen(seed=1):
    return torch.Generator().manual_seed(seed)


def blob(n=16, size=32, sigma=4.0):
    """Grey, centred, rotationally symmetric Gaussian that fades to ~0 before the border."""
    c = (size - 1) / 2
    yy, xx = torch.meshgrid(torch.arange(size) - c, torch.arange(size) - c, indexing="ij")
    img = torch.exp(-(xx**2 + yy**2) / (2 * sigma**2)) * 2 - 1
    return img.expand(n, 3, size, size).clone()


def changed(out, x):
    return (out - x).abs().flatten(1).amax(dim=1) > 1e-3


# -- the pipe as a whole ----------------------------------------------------------------------------------


def test_p_zero_is_exactly_the_identity():
    x = images(16).requires_grad_()
    out = AugmentPipe.bgc(p=0.0)(x, gen())
    assert torch.equal(out, x)
    out.sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))


def test_no_groups_is_the_identity_and_draws_nothing():
    g = gen()
    state = g.get_state()
    x = images()
    assert torch.equal(AugmentPipe(p=1.0)(x, g), x)
    assert torch.equal(g.get_state(), state)


def test_p_one_changes_every_image_and_stays_sane():
    x = images(32, h=32, w=32)
    out = AugmentPipe.bgc(p=1.0)(x, gen())
    assert out.shape == x.shape and out.dtype == x.dtype
    assert torch.isfinite(out).all()
    assert changed(out, x).all()  # scale is always drawn at p = 1, so no image passes untouched
    assert out.abs().max() < 50
    assert 0.05 < out.std(dim=(1, 2, 3)).median() < 5


def test_gradients_flow_to_the_images():
    x = images(8).requires_grad_()
    out = AugmentPipe.bgc(p=1.0)(x, gen())
    (out * torch.linspace(-1, 1, out.numel()).reshape(out.shape)).sum().backward()
    assert torch.isfinite(x.grad).all() and (x.grad.abs().sum(dim=(1, 2, 3)) > 0).all()


def test_gradients_are_correct():
    pipe = AugmentPipe.bgc(p=0.7)
    x = images(3, h=6, w=6).double().requires_grad_()
    assert torch.autograd.gradcheck(lambda t: pipe(t, gen(5)), (x,), eps=1e-6, atol=1e-5)


def test_same_seed_same_output_and_generator_state_resumes():
    pipe, x = AugmentPipe.bgc(p=0.5), images(8)
    assert torch.equal(pipe(x, gen(3)), pipe(x, gen(3)))
    assert not torch.equal(pipe(x, gen(3)), pipe(x, gen(4)))

    g = gen(3)
    pipe(x, g)  # advance, as a training run would
    saved = g.get_state()
    first = pipe(x, g)
    resumed = torch.Generator()
    resumed.set_state(saved)
    assert torch.equal(pipe(x, resumed), first)


def test_partial_batch_leaves_untouched_images_bit_exact():
    x = images(64)
    pipe = AugmentPipe(xflip=1, p=0.3)
    g, _ = pipe.sample_transforms(64, 16, 16, gen(2))
    out = pipe(x, gen(2))
    ident = (g == torch.eye(3)).flatten(1).all(dim=1)
    assert 0 < ident.sum() < 64
    assert torch.equal(out[ident], x[ident])


def test_grey_and_non_square_images():
    out = AugmentPipe.bgc(p=1.0)(images(4, c=1, h=16, w=24), gen())
    assert out.shape == (4, 1, 16, 24) and torch.isfinite(out).all()
    with pytest.raises(FacesynthError):
        AugmentPipe.bgc(p=1.0)(images(2, c=4), gen())


def test_presets_and_p_validation():
    assert set(PRESETS["bgc"]) == set(PRESETS["bg"]) | set(PRESETS["color"])
    assert AugmentPipe.preset("blit").mult["xflip"] == 1 and AugmentPipe.preset("blit").mult["hue"] == 0
    assert AugmentPipe.bgc(hue=0).mult["hue"] == 0
    with pytest.raises(FacesynthError):
        AugmentPipe.preset("nope")
    pipe = AugmentPipe.bgc()
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError):
            pipe.p = bad
    pipe.p = torch.tensor(0.25)
    assert pipe.p == 0.25 and isinstance(pipe.p, float)


# -- each group alone -------------------------------------------------------------------------------------


def test_xflip_flips_or_keeps_each_image():
    x = images(32)
    out = AugmentPipe(xflip=1, p=1.0)(x, gen())
    same = torch.isclose(out, x, atol=ATOL).flatten(1).all(1)
    flipped = torch.isclose(out, x.flip(-1), atol=ATOL).flatten(1).all(1)
    assert (same | flipped).all() and same.any() and flipped.any()


def test_rotate90_permutes_pixels_by_quarter_turns():
    x = images(32)
    out = AugmentPipe(rotate90=1, p=1.0)(x, gen())
    turns = torch.stack([torch.isclose(out, torch.rot90(x, k, dims=(2, 3)), atol=ATOL).flatten(1).all(1)
                         for k in range(4)])
    assert turns.any(dim=0).all() and turns.any(dim=1).all()  # every image is a turn; every turn occurs


def test_xint_shifts_by_whole_pixels_within_an_eighth():
    x = images(16)
    out = AugmentPipe(xint=1, p=1.0)(x, gen())
    n, _, h, w = x.shape
    for i in range(n):
        found = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)  # round(16 / 8) = 2
                 if torch.allclose(out[i, :, 2 + dy:h - 2 + dy, 2 + dx:w - 2 + dx], x[i, :, 2:h - 2, 2:w - 2],
                                   atol=ATOL)]
        assert found, f"image {i} is not a whole-pixel shift"


def test_geometric_groups_keep_constant_images_constant():
    # Reflection padding: no black borders come in from outside the image.
    x = torch.full((8, 3, 16, 16), 0.3)
    for group in PRESETS["bg"]:
        out = AugmentPipe(**{group: 1}, p=1.0)(x, gen())
        assert torch.allclose(out, x, atol=ATOL), group


def test_scale_is_isotropic_about_the_centre():
    x = blob()
    out = AugmentPipe(scale=1, p=1.0)(x, gen())
    assert changed(out, x).all()
    assert torch.allclose(out, out.flip(-1), atol=1e-4)
    assert torch.allclose(out, out.transpose(-1, -2), atol=1e-4)
    g, _ = AugmentPipe(scale=1, p=1.0).sample_transforms(4000, 16, 16, gen())
    assert torch.equal(g[:, 0, 0], g[:, 1, 1]) and (g[:, :2, 2] == 0).all() and (g[:, 0, 1] == 0).all()
    assert torch.log2(g[:, 0, 0]).std() == pytest.approx(0.2, rel=0.08)  # log-normal, std 0.2 ln 2


def test_aniso_stretches_one_axis_and_squeezes_the_other():
    x = blob()
    out = AugmentPipe(aniso=1, p=1.0)(x, gen())
    assert torch.allclose(out, out.flip(-1), atol=1e-4) and torch.allclose(out, out.flip(-2), atol=1e-4)
    assert not torch.allclose(out, out.transpose(-1, -2), atol=1e-2)
    g, _ = AugmentPipe(aniso=1, p=1.0).sample_transforms(100, 16, 16, gen())
    assert torch.allclose(g[:, 0, 0] * g[:, 1, 1], torch.ones(100))


def test_rotate_turns_about_the_centre_with_total_probability_p():
    x = blob()
    out = AugmentPipe(rotate=1, p=1.0)(x, gen())
    c = (32 - 1) / 2
    yy, xx = torch.meshgrid(torch.arange(32) - c, torch.arange(32) - c, indexing="ij")
    inside = xx**2 + yy**2 < 15**2  # corners of a turned image come from the mirrored border
    assert (out - x)[..., inside].abs().max() < 0.03  # a round blob is unchanged up to bilinear error
    square = torch.zeros(16, 3, 32, 32) - 1
    square[:, :, 8:24, 8:24] = 1
    assert changed(AugmentPipe(rotate=1, p=1.0)(square, gen()), square).sum() > 12

    for p in (0.3, 0.5, 1.0):
        g, _ = AugmentPipe(rotate=1, p=p).sample_transforms(4000, 16, 16, gen())
        rotated = (g[:, 0, 1] != 0).float().mean()
        assert rotated == pytest.approx(p, abs=0.03)
        assert torch.allclose(g[:, :2, :2] @ g[:, :2, :2].transpose(1, 2), torch.eye(2).expand(4000, 2, 2),
                              atol=1e-5)


def test_xfrac_is_a_pure_translation_with_std_an_eighth():
    g, _ = AugmentPipe(xfrac=1, p=1.0).sample_transforms(4000, 16, 32, gen())
    assert (g[:, :2, :2] == torch.eye(2)).all()
    assert (g[:, 0, 2] / 32).std() == pytest.approx(0.125, rel=0.08)
    assert (g[:, 1, 2] / 16).std() == pytest.approx(0.125, rel=0.08)
    x = blob()
    out = AugmentPipe(xfrac=1, p=1.0)(x, gen())
    assert changed(out, x).all()
    assert torch.allclose(out.mean(dim=(1, 2, 3)), x.mean(dim=(1, 2, 3)), atol=0.02)  # moved, not rescaled


def test_brightness_adds_a_constant_per_image():
    x = images(2000, h=2, w=2)
    out = AugmentPipe(brightness=1, p=1.0)(x, gen())
    delta = (out - x).flatten(1)
    assert torch.allclose(delta, delta[:, :1].expand_as(delta), atol=ATOL)
    assert delta[:, 0].std() == pytest.approx(0.2, rel=0.08)


def test_contrast_scales_about_grey_per_image():
    x = images(2000, h=2, w=2)
    out = AugmentPipe(contrast=1, p=1.0)(x, gen())
    ratio = (out / x).flatten(1)
    assert torch.allclose(ratio, ratio[:, :1].expand_as(ratio), rtol=1e-4)
    assert (ratio > 0).all()
    assert torch.log2(ratio[:, 0]).std() == pytest.approx(0.5, rel=0.08)


def test_lumaflip_negates_luma_and_keeps_chroma():
    x = images(32)
    out = AugmentPipe(lumaflip=1, p=1.0)(x, gen())
    luma_in, luma_out = x.mean(1, keepdim=True), out.mean(1, keepdim=True)
    assert torch.allclose(out - luma_out, x - luma_in, atol=ATOL)
    kept = torch.isclose(luma_out, luma_in, atol=ATOL).flatten(1).all(1)
    negated = torch.isclose(luma_out, -luma_in, atol=ATOL).flatten(1).all(1)
    assert (kept | negated).all() and kept.any() and negated.any()


def test_hue_rotation_keeps_grey_grey_and_preserves_luma_and_chroma_size():
    pipe = AugmentPipe(hue=1, p=1.0)
    grey = images(16, c=1).expand(16, 3, 16, 16)
    assert torch.allclose(pipe(grey, gen()), grey, atol=ATOL)
    x = images(16)
    out = pipe(x, gen())
    assert changed(out, x).all()
    assert torch.allclose(out.mean(1), x.mean(1), atol=ATOL)
    chroma = lambda t: (t - t.mean(1, keepdim=True)).norm(dim=1)  # noqa: E731
    assert torch.allclose(chroma(out), chroma(x), atol=ATOL)


def test_saturation_keeps_grey_grey_and_scales_chroma():
    pipe = AugmentPipe(saturation=1, p=1.0)
    grey = images(16, c=1).expand(16, 3, 16, 16)
    assert torch.allclose(pipe(grey, gen()), grey, atol=ATOL)
    x = images(16)
    out = pipe(x, gen())
    assert torch.allclose(out.mean(1), x.mean(1), atol=ATOL)
    cin, cout = x - x.mean(1, keepdim=True), out - out.mean(1, keepdim=True)
    s = (cout.flatten(1) * cin.flatten(1)).sum(1) / cin.flatten(1).square().sum(1)
    assert (s > 0).all() and changed(out, x).all()
    assert torch.allclose(cout, s[:, None, None, None] * cin, atol=1e-4)


# -- the controller ---------------------------------------------------------------------------------------

STEP = 32 * 4 / 500_000  # batch 32, interval 4, ada_kimg 500


def run(ctrl, logits, steps, batch=32):
    for _ in range(steps):
        ctrl.accumulate(logits)
        ctrl.update(batch)


def test_controller_raises_p_at_the_stated_rate_every_interval():
    ctrl = AdaController()
    for k in range(1, 4):
        for _ in range(3):
            ctrl.accumulate(torch.ones(32, 1))
            assert ctrl.update(32) == pytest.approx((k - 1) * STEP, abs=1e-15)  # only every 4th step moves p
        ctrl.accumulate(torch.ones(32, 1))
        assert ctrl.update(32) == pytest.approx(k * STEP, rel=1e-12)
    assert ctrl.last_rt == 1.0


def test_controller_lowers_p_when_reals_are_not_overfit():
    ctrl = AdaController(p=0.01)
    run(ctrl, -torch.ones(32), 8)
    assert ctrl.p == pytest.approx(0.01 - 2 * STEP, rel=1e-12)
    mostly = torch.tensor([1.0] * 7 + [-1.0] * 3)  # r_t = 0.4 < 0.6
    run(ctrl, mostly, 4)
    assert ctrl.p == pytest.approx(0.01 - 3 * STEP, rel=1e-12)
    at_target = torch.tensor([1.0] * 8 + [-1.0] * 2)  # r_t = 0.6: hold
    run(ctrl, at_target, 4)
    assert ctrl.p == pytest.approx(0.01 - 3 * STEP, rel=1e-12)


def test_controller_stays_in_unit_interval():
    ctrl = AdaController(ada_kimg=0.2)  # 128 images per interval against 200: two intervals cross [0, 1]
    run(ctrl, torch.ones(32), 40)
    assert ctrl.p == 1.0
    run(ctrl, -torch.ones(32), 40)
    assert ctrl.p == 0.0


def test_controller_fixed_p_and_pipe_tracking():
    pipe = AugmentPipe.bgc()
    ctrl = AdaController(pipe, fixed_p=0.3)
    assert pipe.p == 0.3
    run(ctrl, torch.ones(32), 8)
    assert ctrl.p == 0.3 and pipe.p == 0.3 and ctrl.last_rt == 1.0

    ctrl = AdaController(pipe)
    assert pipe.p == 0.0
    run(ctrl, torch.ones(32), 4)
    assert pipe.p == ctrl.p == pytest.approx(STEP)


def test_controller_state_round_trips_mid_interval():
    logits = [torch.randn(32, generator=gen(i)) + 1.0 for i in range(20)]
    whole = AdaController(ada_kimg=1)
    for t in logits:
        whole.accumulate(t)
        whole.update(32)

    first = AdaController(ada_kimg=1)
    for t in logits[:6]:  # one full interval plus two steps of the next
        first.accumulate(t)
        first.update(32)
    state = json.loads(json.dumps(first.state_dict()))
    resumed = AdaController(ada_kimg=1)
    resumed.load_state_dict(state)
    assert resumed.state_dict() == first.state_dict()
    for t in logits[6:]:
        resumed.accumulate(t)
        resumed.update(32)
    assert resumed.state_dict() == whole.state_dict()
    assert 0 < whole.p <= 1 and math.isfinite(whole.last_rt)
