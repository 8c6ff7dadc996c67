"""ProGAN generator (Karras et al. 2018): pixel-wise feature normalisation, nearest-neighbour
up-sampling, two 3x3 convolutions per resolution, equalized learning rate, leaky ReLU.

The latent enters through a dense layer to 4x4 feature maps; there is no mapping network
(the config's mapping_layers is 0, so "w" is the normalised z and num_ws is 1).
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import GANConfig
from .growth import BlockwiseSynthesis, upsample_nearest
from .layers import EqualConv2d, EqualLinear, ReducedPrecision, normalize_2nd_moment


def pixel_norm(x: torch.Tensor) -> torch.Tensor:
    """Each pixel's feature vector scaled to unit mean square (ProGAN section 4.2)."""
    return normalize_2nd_moment(x, dim=1)


class ProGANBlock(nn.Module, ReducedPrecision):
    def __init__(self, in_ch: int, out_ch: int, resolution: int, latent_dim: int = 0):
        super().__init__()
        self.resolution = resolution
        self.channels = out_ch
        self.is_first = resolution == 4
        self.num_w = 1 if self.is_first else 0
        if self.is_first:
            self.dense = EqualLinear(latent_dim, out_ch * 16, activation="lrelu")
            self.conv = EqualConv2d(out_ch, out_ch, 3, activation="lrelu")
        else:
            self.conv0 = EqualConv2d(in_ch, out_ch, 3, activation="lrelu")
            self.conv1 = EqualConv2d(out_ch, out_ch, 3, activation="lrelu")

    def forward(self, x, ws, noise_mode="random"):
        if self.is_first:
            x = pixel_norm(self.dense(pixel_norm(ws[:, 0])).view(-1, self.channels, 4, 4))
            return pixel_norm(self.conv(x))
        x = pixel_norm(self.conv0(upsample_nearest(x)))
        return pixel_norm(self.conv1(x))


class SynthesisNetwork(BlockwiseSynthesis):
    def __init__(self, cfg: GANConfig):
        super().__init__()
        self.setup(cfg, lambda in_ch, out_ch, res: ProGANBlock(in_ch, out_ch, res, latent_dim=cfg.w_dim))
