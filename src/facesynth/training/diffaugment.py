"""Differentiable augmentation (Zhao et al. 2020, "Differentiable Augmentation for Data-Efficient GAN
Training"): the same random colour, translation and cutout applied to every image the discriminator sees, real
or generated, and differentiated through on the generator's side, so D cannot memorise a small training set
and G is not taught to draw the augmentations.

Images are NCHW in about [-1, 1].  All randomness comes from the generator passed in, so a run that saves that
generator's state resumes exactly.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ..config import DIFFAUGMENT_POLICIES as POLICIES
from ..config import parse_diffaugment as parse_policy  # noqa: F401 - the name the trainer uses

TRANSLATION_RATIO = 0.125  # shift by up to 1/8 of the image each way
CUTOUT_RATIO = 0.5  # a square of half the image's side


def _rand(x: torch.Tensor, gen: torch.Generator | None, *shape) -> torch.Tensor:
    # Drawn on the CPU generator, then moved: the same numbers on every device.
    return torch.rand(*shape, generator=gen).to(x.device, x.dtype)


def color(x: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
    """Brightness (+-0.5), saturation (x0 to x2) and contrast (x0.5 to x1.5), per image."""
    n = x.shape[0]
    x = x + (_rand(x, gen, n, 1, 1, 1) - 0.5)
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (_rand(x, gen, n, 1, 1, 1) * 2) + mean
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (_rand(x, gen, n, 1, 1, 1) + 0.5) + mean


def translation(x: torch.Tensor, gen: torch.Generator | None = None, ratio: float = TRANSLATION_RATIO) -> torch.Tensor:
    """Shift each image by whole pixels, up to ``ratio`` of its size each way, filling with zeros."""
    n, _, h, w = x.shape
    py, px = int(h * ratio + 0.5), int(w * ratio + 0.5)
    sy = torch.randint(-py, py + 1, (n, 1), generator=gen).to(x.device)
    sx = torch.randint(-px, px + 1, (n, 1), generator=gen).to(x.device)
    rows = (torch.arange(h, device=x.device)[None] + sy + py)  # [n, h] rows of the padded image
    cols = (torch.arange(w, device=x.device)[None] + sx + px)  # [n, w]
    padded = F.pad(x, [px, px, py, py])
    idx = torch.arange(n, device=x.device)[:, None, None]
    return padded.permute(0, 2, 3, 1)[idx, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


def cutout(x: torch.Tensor, gen: torch.Generator | None = None, ratio: float = CUTOUT_RATIO) -> torch.Tensor:
    """Zero one square of ``ratio`` of the side per image, centred anywhere (partly outside is allowed)."""
    n, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    oy = torch.randint(0, h + (1 - ch % 2), (n, 1), generator=gen).to(x.device) - ch // 2
    ox = torch.randint(0, w + (1 - cw % 2), (n, 1), generator=gen).to(x.device) - cw // 2
    ys, xs = torch.arange(h, device=x.device)[None], torch.arange(w, device=x.device)[None]
    inside_y = (ys >= oy) & (ys < oy + ch)  # [n, h]
    inside_x = (xs >= ox) & (xs < ox + cw)  # [n, w]
    keep = ~(inside_y[:, :, None] & inside_x[:, None, :])
    return x * keep[:, None].to(x.dtype)


_OPS = {"color": color, "translation": translation, "cutout": cutout}


def diff_augment(x: torch.Tensor, policy: Sequence[str], gen: torch.Generator | None = None) -> torch.Tensor:
    """Apply the policy's augmentations in order (colour, translation, cutout for the paper's default)."""
    for name in policy:
        x = _OPS[name](x, gen)
    return x.contiguous()
