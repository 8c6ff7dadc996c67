"""What a network needs to be grown progressively (Karras et al. 2018).

A growing network is built at its final resolution but runs only up to its
current one; while a new resolution fades in, the newest block's output is
blended (by ``alpha``) with the up-sampled output of the resolution below.
Growth state is plain attributes, set by the trainer every step and stored
with each checkpoint so a generator reloads at the resolution it was saved at.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .layers import EqualConv2d


class Growable:
    """Mixin: ``growth_resolution`` (current) and ``growth_alpha`` (fade-in of the newest block, 1 = done)."""

    max_resolution: int
    min_resolution: int = 4

    def init_growth(self, max_resolution: int) -> None:
        self.max_resolution = max_resolution
        self.growth_resolution = max_resolution
        self.growth_alpha = 1.0

    def set_growth(self, resolution: int, alpha: float = 1.0) -> None:
        r = int(resolution)
        if r < self.min_resolution or r > self.max_resolution or (r & (r - 1)) != 0:
            raise ValueError(f"resolution must be a power of two in [{self.min_resolution}, "
                             f"{self.max_resolution}], got {resolution}")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
        self.growth_resolution = r
        # The lowest resolution has nothing below it to fade from.
        self.growth_alpha = 1.0 if r == self.min_resolution else float(alpha)

    def growth_state(self) -> dict:
        return {"resolution": self.growth_resolution, "alpha": self.growth_alpha}

    @property
    def growth_level(self) -> int:
        """Index of the current resolution's block (0 = 4x4)."""
        return int(math.log2(self.growth_resolution)) - 2

    @property
    def fading(self) -> bool:
        return self.growth_alpha < 1.0

    # Synthesis networks (which carry their config as ``cfg``) share these two.
    @property
    def output_resolution(self) -> int:
        return self.growth_resolution

    @property
    def active_num_ws(self) -> int:
        return self.cfg.num_ws_at(self.growth_resolution)


def fade(low: torch.Tensor, high: torch.Tensor, alpha: float) -> torch.Tensor:
    """The fade-in blend: ``low`` at alpha = 0, ``high`` at alpha = 1."""
    return high if alpha >= 1.0 else low + (high - low) * alpha


def upsample_nearest(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode="nearest")


def downsample_box(x: torch.Tensor, factor: int = 2) -> torch.Tensor:
    """Box filter: the average of each factor x factor block (how images are served at lower resolutions)."""
    return x if factor == 1 else F.avg_pool2d(x, factor)


class BlockwiseSynthesis(torch.nn.Module, Growable):
    """Synthesis as a stack of per-resolution blocks, each with its own toRGB (ProGAN, StyleGAN1).

    Only the current resolution's toRGB makes the image; while it fades in, that image is blended
    with the nearest-neighbour up-sampled image of the toRGB below.  Subclasses fill ``blocks``
    (each ``block(x, ws, noise_mode) -> x`` reading ``block.num_w`` w's) via ``setup``.
    """

    def setup(self, cfg, make_block) -> None:
        """One ``make_block(in_ch, out_ch, resolution)`` and a 1x1 toRGB per resolution."""
        self.cfg = cfg
        self.resolution = cfg.resolution
        self.num_ws = cfg.num_ws
        self.w_dim = cfg.w_dim
        self.init_growth(cfg.resolution)
        blocks, torgbs, prev = [], [], 0
        for res in cfg.block_resolutions:
            ch = cfg.channels_at(res)
            blocks.append(make_block(prev, ch, res))
            torgbs.append(EqualConv2d(ch, cfg.image_channels, 1))
            prev = ch
        self.blocks = torch.nn.ModuleList(blocks)
        self.torgbs = torch.nn.ModuleList(torgbs)
        starts, i = [], 0
        for b in self.blocks:
            starts.append(i)
            i += b.num_w
        if i != self.num_ws:
            raise ValueError(f"blocks read {i} w's but the config has num_ws={self.num_ws}")
        self.w_starts = starts

    def upsample_image(self, img: torch.Tensor) -> torch.Tensor:
        return upsample_nearest(img)

    def layer_resolutions(self) -> list[int]:
        """The resolution each w styles (for coarse/middle/fine mixing)."""
        return [b.resolution for b in self.blocks for _ in range(b.num_w)]

    def forward(self, ws: torch.Tensor, noise_mode: str = "random") -> torch.Tensor:
        if ws.ndim != 3 or ws.shape[1] != self.num_ws or ws.shape[2] != self.w_dim:
            raise ValueError(f"ws must be [batch, {self.num_ws}, {self.w_dim}], got {list(ws.shape)}")
        last = self.growth_level
        x = prev = None
        for block, start in zip(self.blocks[:last + 1], self.w_starts):
            prev = x
            x = block(block.cast_input(x), ws[:, start:start + block.num_w], noise_mode)
        img = self.torgbs[last](x).float()
        if self.fading:
            img = fade(self.upsample_image(self.torgbs[last - 1](prev)), img, self.growth_alpha)
        return img
