"""Discriminators: fromRGB, one down-sampling block per resolution, then minibatch standard
deviation and a small head at 4x4.

StyleGAN2 uses residual blocks (or, in its "skip" and "orig" forms, plain blocks, the skip form adding the
down-sampled image at every resolution); ProGAN and StyleGAN1 plain ones (two 3x3 convolutions, then
average pooling for ProGAN, blur + strided convolution for StyleGAN1).  A class-conditional discriminator
projects its output onto an embedding of the label (Miyato & Koyama 2018).  A progressively grown
discriminator has a fromRGB at every resolution it trains at and, while a new resolution fades
in, blends the new block's output with the fromRGB of the box-down-sampled image below.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..config import GANConfig
from .growth import Growable, downsample_box, fade
from .layers import EqualConv2d, EqualLinear, MinibatchStdDev, ReducedPrecision, downsample2d, make_fir_kernel
from .mapping import MappingNetwork

SQRT_HALF = math.sqrt(0.5)


class DiscriminatorBlock(nn.Module, ReducedPrecision):
    """Two 3x3 convs (the second down-sampling) plus a 1x1 down-sampled skip, each scaled by sqrt(1/2)."""

    def __init__(self, in_ch: int, out_ch: int, resolution: int, clamp: float | None = None):
        super().__init__()
        self.resolution = resolution
        self.conv0 = EqualConv2d(in_ch, in_ch, 3, activation="lrelu", clamp=clamp)
        self.conv1 = EqualConv2d(in_ch, out_ch, 3, activation="lrelu", down=True, clamp=clamp)
        self.skip = EqualConv2d(in_ch, out_ch, 1, bias=False, down=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.skip(x, gain=SQRT_HALF)
        x = self.conv1(self.conv0(x), gain=SQRT_HALF)
        return x + y


class PlainDiscriminatorBlock(nn.Module, ReducedPrecision):
    """Two 3x3 convs then 2x down-sampling: average pooling (ProGAN) or blur + strided conv (StyleGAN1)."""

    def __init__(self, in_ch: int, out_ch: int, resolution: int, blur: bool, clamp: float | None = None):
        super().__init__()
        self.resolution = resolution
        self.blur = blur
        self.conv0 = EqualConv2d(in_ch, in_ch, 3, activation="lrelu", clamp=clamp)
        self.conv1 = EqualConv2d(in_ch, out_ch, 3, activation="lrelu", down=blur, clamp=clamp)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(self.conv0(x))
        return x if self.blur else downsample_box(x)


class DiscriminatorEpilogue(nn.Module):
    """4x4 head: minibatch stddev, conv, fc, and one logit (or, conditioned, its projection onto cmap)."""

    def __init__(self, in_ch: int, mbstd_group: int, mbstd_channels: int = 1, cmap_dim: int = 0,
                 clamp: float | None = None):
        super().__init__()
        self.mbstd = MinibatchStdDev(mbstd_group, mbstd_channels) if mbstd_channels else None
        self.conv = EqualConv2d(in_ch + mbstd_channels, in_ch, 3, activation="lrelu", clamp=clamp)
        self.fc = EqualLinear(in_ch * 16, in_ch, activation="lrelu")
        self.out = EqualLinear(in_ch, cmap_dim or 1)
        self.cmap_dim = cmap_dim

    def forward(self, x: torch.Tensor, cmap: torch.Tensor | None = None) -> torch.Tensor:
        x = self.conv(self.mbstd(x) if self.mbstd is not None else x)
        x = self.out(self.fc(x.flatten(1)))
        if self.cmap_dim:
            x = (x * cmap).sum(dim=1, keepdim=True) * (1.0 / math.sqrt(self.cmap_dim))
        return x


def _block(cfg: GANConfig, res: int) -> nn.Module:
    in_ch, out_ch = cfg.channels_at(res), cfg.channels_at(res // 2)
    if cfg.arch == "stylegan2" and cfg.d_architecture == "resnet":
        return DiscriminatorBlock(in_ch, out_ch, res, cfg.conv_clamp)
    blur = cfg.arch != "progan"  # StyleGAN's plain blocks down-sample by blur + strided conv, ProGAN's by pooling
    return PlainDiscriminatorBlock(in_ch, out_ch, res, blur=blur, clamp=cfg.conv_clamp)


def _fromrgb(cfg: GANConfig, res: int) -> EqualConv2d:
    return EqualConv2d(cfg.image_channels, cfg.channels_at(res), 1, activation="lrelu", clamp=cfg.conv_clamp)


class Discriminator(nn.Module, Growable):
    """image -> one realness logit per image."""

    def __init__(self, cfg: GANConfig):
        super().__init__()
        self.cfg = cfg
        top = cfg.resolution
        self.init_growth(top)
        self.fromrgb = _fromrgb(cfg, top)
        # blocks[i] takes resolution top / 2**i down to half of it.
        self.resolutions = list(reversed(cfg.block_resolutions[1:]))
        self.blocks = nn.ModuleList([_block(cfg, res) for res in self.resolutions])
        # Progressive growing reads images at every resolution from start_resolution up; StyleGAN2's skip form
        # adds the down-sampled image at every resolution below the top (4x4 too) to the features.
        below = [r for r in cfg.block_resolutions[:-1] if r >= cfg.start_resolution] if cfg.progressive else []
        self.fromrgb_below = nn.ModuleDict({str(r): _fromrgb(cfg, r) for r in below})
        self.image_skips = cfg.arch == "stylegan2" and cfg.d_architecture == "skip"
        if self.image_skips:
            self.fromrgb_skip = nn.ModuleDict({str(r): _fromrgb(cfg, r) for r in cfg.block_resolutions[:-1]})
            self.register_buffer("fir", make_fir_kernel(), persistent=False)
        cmap_dim = (cfg.d_cmap_dim or cfg.channels_at(4)) if cfg.c_dim else 0
        self.mapping = MappingNetwork(0, cmap_dim, 0, cfg.d_mapping_layers, cfg.d_mapping_lr_multiplier,
                                      c_dim=cfg.c_dim) if cfg.c_dim else None
        self.epilogue = DiscriminatorEpilogue(cfg.channels_at(4), cfg.mbstd_group, cfg.mbstd_channels, cmap_dim,
                                              cfg.conv_clamp)

    def input_side_parameters(self, blocks: int) -> list[nn.Parameter]:
        """The parameters of the first ``blocks`` blocks from the image side and of the fromRGB layers that feed
        them (what FreezeD keeps fixed when fine-tuning)."""
        if blocks <= 0:
            return []
        modules = [self.fromrgb, *self.blocks[:blocks]]
        if self.image_skips:  # the skip form also reads the image at each of those blocks' output resolutions
            modules += [self.fromrgb_skip[str(b.resolution // 2)] for b in self.blocks[:blocks - 1]]
        return [p for m in modules for p in m.parameters()]

    def _fromrgb(self, res: int) -> nn.Module:
        if res == self.max_resolution:
            return self.fromrgb
        if str(res) not in self.fromrgb_below:
            raise ValueError(f"this discriminator reads {self.max_resolution}x{self.max_resolution} images only "
                             f"(progressive growing from {self.cfg.start_resolution} gives it lower ones); "
                             f"got {res}x{res}")
        return self.fromrgb_below[str(res)]

    def forward(self, img: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        """Logits [batch, 1]; a class-conditional discriminator needs the one-hot labels ``c``."""
        if self.image_skips:
            return self._forward_skip(img, c)
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
        return self.epilogue(x.float(), self._cmap(c, img))

    def _cmap(self, c: torch.Tensor | None, img: torch.Tensor) -> torch.Tensor | None:
        if self.mapping is None:
            return None
        if c is None:
            raise ValueError(f"this discriminator is class-conditional ({self.cfg.c_dim} classes): pass labels c")
        return self.mapping.features(None, c.to(img.device))

    def _forward_skip(self, img: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
        """StyleGAN2's skip form: at each resolution the features gain the fromRGB of the image down-sampled
        to it (no progressive growing: its image is always at the top resolution)."""
        x = self.fromrgb(self.blocks[0].cast_input(img)) if self.blocks else self.fromrgb(img)
        for block in self.blocks:
            img = downsample2d(img, self.fir)
            x = block(block.cast_input(x))
            x = x + self.fromrgb_skip[str(block.resolution // 2)](img.to(x.dtype))
        return self.epilogue(x.float(), self._cmap(c, img))
