"""Discriminators: fromRGB, one down-sampling block per resolution, then minibatch standard
deviation and a small head at 4x4.

StyleGAN2 uses residual blocks; ProGAN and StyleGAN1 plain ones (two 3x3 convolutions, then
average pooling for ProGAN, blur + strided convolution for StyleGAN1).  A progressively grown
discriminator has a fromRGB at every resolution it trains at and, while a new resolution fades
in, blends the new block's output with the fromRGB of the box-down-sampled image below.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..presets import GANConfig
from .growth import Growable, downsample_box, fade
from .layers import EqualConv2d, EqualLinear, MinibatchStdDev, ReducedPrecision

SQRT_HALF = math.sqrt(0.5)


class DiscriminatorBlock(nn.Module, ReducedPrecision):
    """Two 3x3 convs (the second down-sampling) plus a 1x1 down-sampled skip, each scaled by sqrt(1/2)."""

    def __init__(self, in_ch: int, out_ch: int, resolution: int):
        super().__init__()
        self.resolution = resolution
        self.conv0 = EqualConv2d(in_ch, in_ch, 3, activation="lrelu")
        self.conv1 = EqualConv2d(in_ch, out_ch, 3, activation="lrelu", down=True)
        self.skip = EqualConv2d(in_ch, out_ch, 1, bias=False, down=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.skip(x, gain=SQRT_HALF)
        x = self.conv1(self.conv0(x), gain=SQRT_HALF)
        return x + y


class PlainDiscriminatorBlock(nn.Module, ReducedPrecision):
    """Two 3x3 convs then 2x down-sampling: average pooling (ProGAN) or blur + strided conv (StyleGAN1)."""

    def __init__(self, in_ch: int, out_ch: int, resolution: int, blur: bool):
        super().__init__()
        self.resolution = resolution
        self.blur = blur
        self.conv0 = EqualConv2d(in_ch, in_ch, 3, activation="lrelu")
        self.conv1 = EqualConv2d(in_ch, out_ch, 3, activation="lrelu", down=blur)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(self.conv0(x))
        return x if self.blur else downsample_box(x)


class DiscriminatorEpilogue(nn.Module):
    def __init__(self, in_ch: int, mbstd_group: int):
        super().__init__()
        self.mbstd = MinibatchStdDev(mbstd_group, 1)
        self.conv = EqualConv2d(in_ch + 1, in_ch, 3, activation="lrelu")
        self.fc = EqualLinear(in_ch * 16, in_ch, activation="lrelu")
        self.out = EqualLinear(in_ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(self.mbstd(x))
        return self.out(self.fc(x.flatten(1)))


def _block(cfg: GANConfig, res: int) -> nn.Module:
    in_ch, out_ch = cfg.channels_at(res), cfg.channels_at(res // 2)
    if cfg.arch == "stylegan2":
        return DiscriminatorBlock(in_ch, out_ch, res)
    return PlainDiscriminatorBlock(in_ch, out_ch, res, blur=cfg.arch == "stylegan1")


class Discriminator(nn.Module, Growable):
    """image -> one realness logit per image."""

    def __init__(self, cfg: GANConfig):
        super().__init__()
        self.cfg = cfg
        top = cfg.resolution
        self.init_growth(top)
        self.fromrgb = EqualConv2d(cfg.image_channels, cfg.channels_at(top), 1, activation="lrelu")
        # blocks[i] takes resolution top / 2**i down to half of it.
        self.resolutions = list(reversed(cfg.block_resolutions[1:]))
        self.blocks = nn.ModuleList([_block(cfg, res) for res in self.resolutions])
        # Progressive growing reads images at every resolution from start_resolution up.
        below = [r for r in cfg.block_resolutions[:-1] if r >= cfg.start_resolution] if cfg.progressive else []
        self.fromrgb_below = nn.ModuleDict({
            str(r): EqualConv2d(cfg.image_channels, cfg.channels_at(r), 1, activation="lrelu") for r in below})
        self.epilogue = DiscriminatorEpilogue(cfg.channels_at(4), cfg.mbstd_group)

    def _fromrgb(self, res: int) -> nn.Module:
        if res == self.max_resolution:
            return self.fromrgb
        if str(res) not in self.fromrgb_below:
            raise ValueError(f"this discriminator reads {self.max_resolution}x{self.max_resolution} images only "
                             f"(progressive growing from {self.cfg.start_resolution} gives it lower ones); "
                             f"got {res}x{res}")
        return self.fromrgb_below[str(res)]

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        res = self.growth_resolution
        if img.shape[-1] != res or img.shape[-2] != res:
            raise ValueError(f"expected {res}x{res} images at the current growth stage, "
                             f"got {img.shape[-2]}x{img.shape[-1]}")
        first = self.resolutions.index(res) if res > 4 else len(self.blocks)
        if first < len(self.blocks):
            block = self.blocks[first]
            x = block(self._fromrgb(res)(block.cast_input(img)))
            if self.fading:
                x = fade(self._fromrgb(res // 2)(downsample_box(img)), x, self.growth_alpha)
        else:
            x = self._fromrgb(res)(img)
        for block in self.blocks[first + 1:]:
            x = block(block.cast_input(x))
        return self.epilogue(x.float())
