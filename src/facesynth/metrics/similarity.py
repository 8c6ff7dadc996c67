"""Pixel-level similarity of image pairs: PSNR and SSIM (Wang et al. 2004).

Images are float tensors [N, C, H, W] in [-1, 1] (the generator's range); both measures are taken on
the [0, 1] scale, SSIM with an 11-tap Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03, averaged over
channels and the valid (unpadded) window positions, as scikit-image's ``structural_similarity`` with
``gaussian_weights=True`` computes it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _unit(x: torch.Tensor) -> torch.Tensor:
    return (x.float().clamp(-1, 1) + 1) / 2


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """[N] peak signal-to-noise ratio in dB."""
    mse = (_unit(a) - _unit(b)).square().mean(dim=(1, 2, 3))
    return 10 * torch.log10(1.0 / mse.clamp_min(1e-12))


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-x.square() / (2 * sigma**2))
    return (g / g.sum()).float()


def ssim(a: torch.Tensor, b: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """[N] mean structural similarity."""
    x, y = _unit(a), _unit(b)
    c = x.shape[1]
    size = min(window, x.shape[-1], x.shape[-2])
    size -= 1 - size % 2  # odd
    g = _gaussian_window(size, sigma).to(x.device)
    kernel_h = g.view(1, 1, 1, -1).repeat(c, 1, 1, 1)
    kernel_v = g.view(1, 1, -1, 1).repeat(c, 1, 1, 1)

    def blur(t):
        return F.conv2d(F.conv2d(t, kernel_h, groups=c), kernel_v, groups=c)

    mx, my = blur(x), blur(y)
    # Sample (not population) covariances over the window, as scikit-image uses.
    n = size * size
    cov_norm = n / (n - 1) if n > 1 else 1.0
    vx = (blur(x * x) - mx * mx) * cov_norm
    vy = (blur(y * y) - my * my) * cov_norm
    vxy = (blur(x * y) - mx * my) * cov_norm
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mx * my + c1) * (2 * vxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return s.mean(dim=(1, 2, 3))
