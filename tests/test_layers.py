import math

import pytest
import torch

from facesynth.nets.layers import (
    EqualConv2d,
    EqualLinear,
    MinibatchStdDev,
    ModulatedConv2d,
    downsample2d,
    make_fir_kernel,
    modulated_conv2d,
    upsample2d,
)


def test_equal_linear_scales_weights_at_runtime():
    torch.manual_seed(0)
    layer = EqualLinear(256, 128)
    assert math.isclose(layer.weight_gain, 1 / 16)
    # Stored weights are unit-variance; the effective weights keep activations at unit variance.
    assert abs(layer.weight.std().item() - 1.0) < 0.05
    y = layer(torch.randn(4096, 256))
    assert abs(y.std().item() - 1.0) < 0.05


def test_equal_linear_lr_multiplier_shrinks_stored_weights_not_output():
    torch.manual_seed(0)
    layer = EqualLinear(256, 256, lr_multiplier=0.01)
    assert abs(layer.weight.std().item() - 100.0) < 5
    assert abs(layer(torch.randn(4096, 256)).std().item() - 1.0) < 0.05


def test_equal_conv_keeps_unit_variance():
    torch.manual_seed(0)
    conv = EqualConv2d(64, 64, 3)
    y = conv(torch.randn(16, 64, 16, 16))
    assert abs(y[:, :, 1:-1, 1:-1].std().item() - 1.0) < 0.05


def test_demodulation_keeps_unit_variance_whatever_the_styles():
    torch.manual_seed(0)
    x = torch.randn(8, 64, 16, 16)
    weight = torch.randn(64, 64, 3, 3)
    for scale in (0.1, 1.0, 10.0):
        styles = torch.randn(8, 64).abs() * scale + 0.1
        y = modulated_conv2d(x, weight, styles, demodulate=True)
        std = y[:, :, 1:-1, 1:-1].std().item()
        assert abs(std - 1.0) < 0.1, (scale, std)


def test_modulated_conv_grouped_and_shared_forms_agree():
    torch.manual_seed(0)
    x = torch.randn(3, 8, 8, 8)
    w = torch.randn(5, 8, 3, 3)
    s = torch.randn(3, 8)
    fir = make_fir_kernel()
    for up in (False, True):
        for demod in (False, True):
            a = modulated_conv2d(x, w, s, demodulate=demod, up=up, fir=fir, grouped=False)
            b = modulated_conv2d(x, w, s, demodulate=demod, up=up, fir=fir, grouped=True)
            assert a.shape == b.shape == (3, 5, 16 if up else 8, 16 if up else 8)
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_fir_resampling_preserves_constants_and_shapes():
    fir = make_fir_kernel()
    x = torch.ones(2, 3, 8, 8)
    up = upsample2d(x, fir)
    down = downsample2d(x, fir)
    assert up.shape == (2, 3, 16, 16) and down.shape == (2, 3, 4, 4)
    torch.testing.assert_close(up[:, :, 2:-2, 2:-2], torch.ones_like(up[:, :, 2:-2, 2:-2]))
    torch.testing.assert_close(down[:, :, 1:-1, 1:-1], torch.ones_like(down[:, :, 1:-1, 1:-1]))


def test_upsampling_is_antialiased():
    # A checkerboard (the highest frequency) must not survive up-sampling as a checkerboard at full strength.
    fir = make_fir_kernel()
    x = (torch.arange(8)[None, :] + torch.arange(8)[:, None]) % 2 * 2.0 - 1
    up = upsample2d(x[None, None].float(), fir)
    assert up[0, 0, 4:-4, 4:-4].abs().max() < 0.3


def test_modulated_up_conv_doubles_resolution():
    conv = ModulatedConv2d(8, 4, 3, w_dim=16, up=True)
    y = conv(torch.randn(2, 8, 4, 4), torch.randn(2, 16))
    assert y.shape == (2, 4, 8, 8)


@pytest.mark.parametrize("group", [2, 4])
def test_minibatch_stddev_appends_group_statistics(group):
    x = torch.randn(8, 6, 4, 4)
    y = MinibatchStdDev(group)(x)
    assert y.shape == (8, 7, 4, 4)
    # Identical samples within a group have zero standard deviation.
    same = x[:1].repeat(8, 1, 1, 1)
    assert MinibatchStdDev(group)(same)[:, -1].abs().max() < 1e-3
