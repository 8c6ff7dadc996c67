"""StyleGAN2 synthesis network with weight-demodulated convolutions.

Layout follows Karras et al. 2020 ("config F"): a learned 4x4 constant, two
style-modulated 3x3 convolutions per resolution (the first up-sampling), noise
inputs with learned per-channel strength, and toRGB outputs summed across
resolutions (the "skip" form; "resnet" adds an up-sampled 1x1 shortcut to each
block and "orig" neither, both with one toRGB at the top).  One w per layer
(``num_ws``) makes style mixing a matter of choosing which rows of ``ws`` come
from which latent.
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import GANConfig
from .growth import Growable
from .layers import (EqualConv2d, ModulatedConv2d, NoiseInjection, ReducedPrecision, activate, make_fir_kernel,
                     scale_and_clamp, upsample2d)

SQRT_HALF = 0.5 ** 0.5


class StyledConv(nn.Module):
    """Modulated 3x3 conv (optionally 2x up) -> noise -> bias -> leaky ReLU (-> clamp)."""

    def __init__(self, in_ch: int, out_ch: int, w_dim: int, resolution: int, up: bool = False,
                 clamp: float | None = None):
        super().__init__()
        self.conv = ModulatedConv2d(in_ch, out_ch, 3, w_dim, demodulate=True, up=up)
        self.noise = NoiseInjection(out_ch, resolution)
        self.bias = nn.Parameter(torch.zeros(out_ch))
        self.clamp = clamp

    def forward(self, x, w, noise_mode="random", gain: float = 1.0):
        x = self.conv(x, w)
        x = self.noise(x, mode=noise_mode)
        return scale_and_clamp(activate(x + self.bias.view(1, -1, 1, 1).to(x.dtype), "lrelu"), gain, self.clamp)


class ToRGB(nn.Module):
    """1x1 modulated conv without demodulation: the image contribution of one resolution."""

    def __init__(self, in_ch: int, out_ch: int, w_dim: int, clamp: float | None = None):
        super().__init__()
        self.conv = ModulatedConv2d(in_ch, out_ch, 1, w_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(out_ch))
        self.clamp = clamp

    def forward(self, x, w):
        return scale_and_clamp(self.conv(x, w) + self.bias.view(1, -1, 1, 1).to(x.dtype), clamp=self.clamp)


class SynthesisBlock(nn.Module, ReducedPrecision):
    """All layers at one resolution: (up-conv), conv, and a toRGB in the skip form or at the top."""

    def __init__(self, in_ch: int, out_ch: int, w_dim: int, resolution: int, image_channels: int,
                 architecture: str = "skip", is_last: bool = True, clamp: float | None = None):
        super().__init__()
        self.resolution = resolution
        self.architecture = architecture
        self.is_first = resolution == 4
        if self.is_first:
            self.const = nn.Parameter(torch.randn(out_ch, 4, 4))
            self.conv1 = StyledConv(out_ch, out_ch, w_dim, resolution, clamp=clamp)
            self.num_conv = 1
        else:
            self.conv0 = StyledConv(in_ch, out_ch, w_dim, resolution, up=True, clamp=clamp)
            self.conv1 = StyledConv(out_ch, out_ch, w_dim, resolution, clamp=clamp)
            self.num_conv = 2
            self.register_buffer("fir", make_fir_kernel(), persistent=False)
            if architecture == "resnet":  # up-sampled linear shortcut (1x1 conv, then the FIR up-sampling)
                self.skip = EqualConv2d(in_ch, out_ch, 1, bias=False)
        self.torgb = ToRGB(out_ch, image_channels, w_dim, clamp) if architecture == "skip" or is_last else None

    def forward(self, x, img, ws, noise_mode="random", alpha: float = 1.0):
        # ws: [batch, num_conv + 1, w_dim]; the last one feeds toRGB (in the skip form it is also the next
        # block's first).  alpha < 1 fades this block's image contribution in during progressive growing
        # (alpha = 0: the up-sampled image below).
        if self.is_first:
            x = self.const.unsqueeze(0).expand(ws.shape[0], -1, -1, -1)
            x = self.conv1(x, ws[:, 0], noise_mode)
        elif self.architecture == "resnet":
            x = self.cast_input(x)
            y = upsample2d(self.skip(x), self.fir) * SQRT_HALF
            x = self.conv0(x, ws[:, 0], noise_mode)
            x = y + self.conv1(x, ws[:, 1], noise_mode, gain=SQRT_HALF)
        else:
            x = self.conv0(self.cast_input(x), ws[:, 0], noise_mode)
            x = self.conv1(x, ws[:, 1], noise_mode)
        if self.torgb is None:
            return x, img
        y = self.torgb(x, ws[:, self.num_conv])
        y = y.float()  # the image sums stay in float32 whatever the block computes in
        if alpha < 1.0:
            y = y * alpha
        img = y if img is None else upsample2d(img, self.fir) + y
        return x, img


class SynthesisNetwork(nn.Module, Growable):
    def __init__(self, cfg: GANConfig):
        super().__init__()
        self.cfg = cfg
        self.resolution = cfg.resolution
        self.init_growth(cfg.resolution)
        self.register_buffer("fir", make_fir_kernel(), persistent=False)
        self.num_ws = cfg.num_ws
        self.w_dim = cfg.w_dim
        blocks = []
        prev = 0
        for res in cfg.block_resolutions:
            ch = cfg.channels_at(res)
            blocks.append(SynthesisBlock(prev, ch, cfg.w_dim, res, cfg.image_channels, cfg.g_architecture,
                                         is_last=res == cfg.resolution, clamp=cfg.conv_clamp))
            prev = ch
        self.blocks = nn.ModuleList(blocks)
        # Which w each block reads: block i starts where the previous one's convs ended.
        starts, i = [], 0
        for b in self.blocks:
            starts.append(i)
            i += b.num_conv
        self.w_starts = starts

    def upsample_image(self, img: torch.Tensor) -> torch.Tensor:
        """How an image from the resolution below enters this one (the skip connections' up-sampling)."""
        return upsample2d(img, self.fir)

    def layer_resolutions(self) -> list[int]:
        """The resolution that each of the ``num_ws`` w vectors styles (for coarse/middle/fine mixing)."""
        out = []
        for b in self.blocks:
            out += [b.resolution] * b.num_conv
        out.append(self.resolution)  # last toRGB
        return out

    def forward(self, ws: torch.Tensor, noise_mode: str = "random") -> torch.Tensor:
        if ws.ndim != 3 or ws.shape[1] != self.num_ws or ws.shape[2] != self.w_dim:
            raise ValueError(f"ws must be [batch, {self.num_ws}, {self.w_dim}], got {list(ws.shape)}")
        x = img = None
        last = self.growth_level
        for i, (block, start) in enumerate(zip(self.blocks[:last + 1], self.w_starts)):
            alpha = self.growth_alpha if i == last else 1.0
            x, img = block(x, img, ws[:, start:start + block.num_conv + 1], noise_mode, alpha)
        return img


