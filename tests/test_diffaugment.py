"""DiffAugment: differentiable, reproducible from its generator, and each op does what it says."""

import pytest
import torch

from facesynth.training.diffaugment import POLICIES, color, cutout, diff_augment, parse_policy, translation


def _images(n=6, size=16):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1


def test_gradients_flow_and_the_generator_reproduces():
    x = _images().requires_grad_(True)
    y = diff_augment(x, POLICIES, torch.Generator().manual_seed(5))
    y.square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    again = diff_augment(x.detach(), POLICIES, torch.Generator().manual_seed(5))
    assert torch.equal(y.detach(), again)
    other = diff_augment(x.detach(), POLICIES, torch.Generator().manual_seed(6))
    assert not torch.equal(again, other)


def test_translation_moves_whole_pixels_and_fills_zeros():
    x = torch.arange(16.0).reshape(1, 1, 4, 4).repeat(8, 3, 1, 1) + 1  # no zeros of its own
    y = translation(x, torch.Generator().manual_seed(1), ratio=0.25)
    for img, out in zip(x, y):
        kept = out[out != 0]
        assert set(kept.tolist()) <= set(img.flatten().tolist())  # values moved, none invented
        assert (out == 0).sum() % 3 == 0
    assert any(not torch.equal(a, b) for a, b in zip(x, y))


def test_cutout_zeroes_one_square_per_image():
    x = torch.ones(32, 3, 16, 16)
    y = cutout(x, torch.Generator().manual_seed(2))
    zeros = (y[:, 0] == 0).sum(dim=(1, 2))
    assert zeros.max() == 64 and zeros.min() > 0  # 8x8 when wholly inside, less when partly outside
    assert torch.equal(y[:, 0], y[:, 2])  # the same square in every channel


def test_color_changes_images_by_image_wide_factors():
    x = torch.zeros(4, 3, 8, 8)  # a flat grey image stays flat: brightness moves it, contrast keeps it
    y = color(x, torch.Generator().manual_seed(3))
    assert torch.allclose(y, y[:, :1, :1, :1].expand_as(y), atol=1e-6)
    assert y.abs().max() > 0


def test_policy_names_are_checked():
    assert parse_policy("color, translation,cutout") == POLICIES
    with pytest.raises(ValueError, match="unknown DiffAugment policy"):
        parse_policy("color,blur")
