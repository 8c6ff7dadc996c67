"""A projected discriminator (Sauer et al. 2021, "Projected GANs Converge Faster").

Images go through a frozen ImageNet network (EfficientNet-Lite0) taken at four scales; fixed random 1x1
convolutions mix each scale's channels (cross-channel mixing) and a fixed random top-down path mixes the
scales (cross-scale mixing), so that no single pretrained feature dominates; small trainable discriminators,
one per scale, turn the mixed features into maps of logits.  Only those small discriminators learn.  They are
trained with the hinge loss, and every image they see is augmented (DiffAugment) by the training loop.

The feature network reads the images at ``feature_resolution`` (default: the training resolution, at least 64
px): near the training resolution it costs less than StyleGAN2's own discriminator, at 224 px many times more.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from .efficientnet_lite import FEATURE_CHANNELS, load_efficientnet_lite0
from .growth import Growable

# Channels after cross-channel mixing, per feature scale (stride 4, 8, 16, 32), as the paper's.
MIXED_CHANNELS = (64, 128, 256, 512)
# Channels of the per-scale discriminators' layers by resolution.
DISC_CHANNELS = {4: 512, 8: 512, 16: 256, 32: 128, 64: 64, 128: 64, 256: 32}
MIN_FEATURE_RESOLUTION = 64


def _frozen(module: nn.Module) -> nn.Module:
    return module.requires_grad_(False)


class ScaleMixing(nn.Module):
    """Fixed random projections: a 1x1 conv per scale, then a top-down path (each coarser result up-sampled 2x,
    added to the next finer one and projected by a 1x1 conv that halves its channels)."""

    def __init__(self, in_channels=FEATURE_CHANNELS, mixed=MIXED_CHANNELS, seed: int = 0):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)  # the same random projection for every run and every rank
        self.ccm = nn.ModuleList([nn.Conv2d(ci, co, 1) for ci, co in zip(in_channels, mixed)])
        # Fusing scale i's mixture with the up-sampled result from below halves the channels (the finest keeps
        # its own), so each result has the channels of the next finer mixture it is added to.
        self.out_channels = tuple(c if i == 0 else c // 2 for i, c in enumerate(mixed))
        if any(self.out_channels[i + 1] != mixed[i] for i in range(len(mixed) - 1)):
            raise ValueError(f"mixed channels {mixed} must double from scale to scale")
        self.csm = nn.ModuleList([nn.Conv2d(c, oc, 1) for c, oc in zip(mixed, self.out_channels)])
        for conv in [*self.ccm, *self.csm]:
            nn.init.kaiming_normal_(conv.weight, generator=gen)
            nn.init.zeros_(conv.bias)
        _frozen(self)

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        mixed = [ccm(f) for ccm, f in zip(self.ccm, feats)]
        out = [None] * len(mixed)
        below = None
        for i in reversed(range(len(mixed))):
            x = mixed[i]
            if below is not None:
                x = x + F.interpolate(below, size=x.shape[-2:], mode="bilinear", align_corners=False)
            out[i] = self.csm[i](x)
            below = out[i]
        return out


class ScaleDiscriminator(nn.Module):
    """One scale's discriminator: strided 4x4 convs with batch norm down to 8x8, then a 4x4 conv to logits."""

    def __init__(self, channels: int, resolution: int, end: int = 8):
        super().__init__()
        layers, res, ch = [], resolution, channels
        while res > end:
            nxt = DISC_CHANNELS.get(res // 2, 512)
            layers += [spectral_norm(nn.Conv2d(ch, nxt, 4, 2, 1, bias=False)), nn.BatchNorm2d(nxt),
                       nn.LeakyReLU(0.2)]
            res, ch = res // 2, nxt
        layers.append(spectral_norm(nn.Conv2d(ch, 1, min(4, res), 1, 0)))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).flatten(1)


class ProjectedDiscriminator(nn.Module, Growable):
    """image in [-1, 1] -> logits [batch, K] (every position of every scale's map; the hinge loss averages)."""

    def __init__(self, resolution: int, feature_resolution: int | None = None, weights: str | None = None):
        super().__init__()
        self.init_growth(resolution)
        self.min_resolution = resolution  # not grown progressively
        self.feature_resolution = feature_resolution or max(resolution, MIN_FEATURE_RESOLUTION)
        # Frozen and outside the state dict's trainable part: kept as a plain attribute so that checkpoints
        # hold only what trains (the weights come from the installed package).
        self.__dict__["features"] = load_efficientnet_lite0(weights)
        self.mixing = ScaleMixing()
        sizes = [self.feature_resolution // s for s in (4, 8, 16, 32)]  # each scale keeps its feature map's size
        self.discs = nn.ModuleList([ScaleDiscriminator(c, r) for c, r in zip(self.mixing.out_channels, sizes)])

    def _apply(self, fn, recurse=True):
        # .to(device) and dtype casts reach the frozen feature network too.
        self.__dict__["features"] = self.features._apply(fn)
        return super()._apply(fn, recurse)

    def forward(self, img: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        x = img.float()
        if x.shape[-1] != self.feature_resolution:
            x = F.interpolate(x, size=(self.feature_resolution,) * 2, mode="bilinear", align_corners=False,
                              antialias=x.shape[-1] > self.feature_resolution)
        feats = self.features.features(self.features.normalize((x + 1) / 2))
        return torch.cat([d(f) for d, f in zip(self.discs, self.mixing(feats))], dim=1)
