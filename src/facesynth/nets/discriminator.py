"""Residual discriminator (StyleGAN2): fromRGB at full resolution, residual
down-sampling blocks, then minibatch standard deviation and a small head at 4x4."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..presets import GANConfig
from .layers import EqualConv2d, EqualLinear, MinibatchStdDev

SQRT_HALF = math.sqrt(0.5)


class DiscriminatorBlock(nn.Module):
    """Two 3x3 convs (the second down-sampling) plus a 1x1 down-sampled skip, each scaled by sqrt(1/2)."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.conv0 = EqualConv2d(in_ch, in_ch, 3, activation="lrelu")
        self.conv1 = EqualConv2d(in_ch, out_ch, 3, activation="lrelu", down=True)
        self.skip = EqualConv2d(in_ch, out_ch, 1, bias=False, down=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.skip(x, gain=SQRT_HALF)
        x = self.conv1(self.conv0(x), gain=SQRT_HALF)
        return x + y


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


class Discriminator(nn.Module):
    """image -> one realness logit per image."""

    def __init__(self, cfg: GANConfig):
        super().__init__()
        self.cfg = cfg
        top = cfg.resolution
        self.fromrgb = EqualConv2d(cfg.image_channels, cfg.channels_at(top), 1, activation="lrelu")
        self.blocks = nn.ModuleList([
            DiscriminatorBlock(cfg.channels_at(res), cfg.channels_at(res // 2))
            for res in reversed(cfg.block_resolutions[1:])
        ])
        self.epilogue = DiscriminatorEpilogue(cfg.channels_at(4), cfg.mbstd_group)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        x = self.fromrgb(img)
        for block in self.blocks:
            x = block(x)
        return self.epilogue(x)
