"""StyleGAN (v1) synthesis network (Karras et al. 2019): a learned 4x4 constant, and after every
convolution per-pixel noise, a bias, leaky ReLU and AdaIN (instance normalisation, then a
per-channel scale and bias computed from w).  Up-sampling is nearest-neighbour followed by a
[1, 2, 1] blur, as in the paper's official code.
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import GANConfig
from .growth import BlockwiseSynthesis, upsample_nearest
from .layers import EqualConv2d, EqualLinear, NoiseInjection, ReducedPrecision, activate, fir_filter, make_fir_kernel


def instance_norm(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    x = x - x.mean(dim=(2, 3), keepdim=True)
    return x * (x.square().mean(dim=(2, 3), keepdim=True) + eps).rsqrt()


class AdaIN(nn.Module):
    """Instance norm, then x * (1 + scale(w)) + bias(w), per channel."""

    def __init__(self, channels: int, w_dim: int):
        super().__init__()
        self.style = EqualLinear(w_dim, 2 * channels)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        scale, bias = self.style(w).unsqueeze(-1).unsqueeze(-1).chunk(2, dim=1)
        return instance_norm(x) * (scale + 1).to(x.dtype) + bias.to(x.dtype)


class StyleLayer(nn.Module):
    """(3x3 conv, optionally after 2x up-sampling) -> noise -> bias -> leaky ReLU -> AdaIN."""

    def __init__(self, in_ch: int, out_ch: int, w_dim: int, resolution: int, conv: str):
        super().__init__()
        self.mode = conv  # "none" (after the constant), "same" or "up"
        if conv != "none":
            self.conv = EqualConv2d(in_ch, out_ch, 3, bias=False)
        if conv == "up":
            self.register_buffer("blur", make_fir_kernel((1, 2, 1)), persistent=False)
        self.noise = NoiseInjection(out_ch, resolution)
        self.bias = nn.Parameter(torch.zeros(out_ch))
        self.adain = AdaIN(out_ch, w_dim)

    def forward(self, x, w, noise_mode="random"):
        if self.mode == "up":
            x = fir_filter(self.conv(upsample_nearest(x)), self.blur, (1, 1))
        elif self.mode == "same":
            x = self.conv(x)
        x = self.noise(x, mode=noise_mode)
        x = activate(x + self.bias.view(1, -1, 1, 1).to(x.dtype), "lrelu")
        return self.adain(x, w)


class StyleBlock(nn.Module, ReducedPrecision):
    def __init__(self, in_ch: int, out_ch: int, w_dim: int, resolution: int):
        super().__init__()
        self.resolution = resolution
        self.num_w = 2
        self.is_first = resolution == 4
        if self.is_first:
            # Random rather than the paper's ones: instance norm maps a spatially constant input to zero,
            # so only the noise would survive the first AdaIN until the constant had learned structure.
            self.const = nn.Parameter(torch.randn(out_ch, 4, 4))
            self.layer0 = StyleLayer(out_ch, out_ch, w_dim, resolution, "none")
        else:
            self.layer0 = StyleLayer(in_ch, out_ch, w_dim, resolution, "up")
        self.layer1 = StyleLayer(out_ch, out_ch, w_dim, resolution, "same")

    def forward(self, x, ws, noise_mode="random"):
        if self.is_first:
            x = self.const.unsqueeze(0).expand(ws.shape[0], -1, -1, -1)
        x = self.layer0(x, ws[:, 0], noise_mode)
        return self.layer1(x, ws[:, 1], noise_mode)


class SynthesisNetwork(BlockwiseSynthesis):
    def __init__(self, cfg: GANConfig):
        super().__init__()
        self.setup(cfg, lambda in_ch, out_ch, res: StyleBlock(in_ch, out_ch, cfg.w_dim, res))
