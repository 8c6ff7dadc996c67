"""A projected discriminator (Sauer et al. 2021, "Projected GANs Converge Faster").

Images go through a frozen ImageNet network (EfficientNet-Lite0) taken at four scales; fixed random 1x1
convolutions mix each scale's channels (cross-channel mixing) and a fixed random top-down path mixes the
scales (cross-scale mixing), so that no single pretrained feature dominates; small trainable discriminators,
one per scale, turn the mixed features into maps of logits.  Only those small discriminators learn.  They are
trained with the hinge loss, and every image they see is augmented (DiffAugment) by the training loop.

``ProjectedAndNativeDiscriminator`` adds the architecture's own pixel-space discriminator beside it, as
"vision-aided" GANs do (Kumari et al. 2022): a style-based generator trained against frozen ImageNet features
alone learns saturated colour splats that excite those features the way faces do; a discriminator that reads
the pixels themselves, with its own R1 penalty, does not let them pass.

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


class ScaleMixing(nn.Module):
    """Fixed random projections: a 1x1 conv per scale, then a top-down path (each coarser result up-sampled 2x,
    added to the next finer one and projected by a 1x1 conv that halves its channels).

    The projections are buffers, not parameters: nothing (not even ``requires_grad_(True)`` on the whole
    discriminator, as the training loop does) makes them learn."""

    def __init__(self, in_channels=FEATURE_CHANNELS, mixed=MIXED_CHANNELS, seed: int = 0):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)  # the same random projection for every run and every rank
        # Fusing scale i's mixture with the up-sampled result from below halves the channels (the finest keeps
        # its own), so each result has the channels of the next finer mixture it is added to.
        self.out_channels = tuple(c if i == 0 else c // 2 for i, c in enumerate(mixed))
        if any(self.out_channels[i + 1] != mixed[i] for i in range(len(mixed) - 1)):
            raise ValueError(f"mixed channels {mixed} must double from scale to scale")
        for i, (ci, co) in enumerate(zip(in_channels, mixed)):
            self.register_buffer(f"ccm{i}", self._kaiming(co, ci, gen))
        for i, (c, oc) in enumerate(zip(mixed, self.out_channels)):
            self.register_buffer(f"csm{i}", self._kaiming(oc, c, gen))
        self.scales = len(mixed)

    @staticmethod
    def _kaiming(cout: int, cin: int, gen: torch.Generator) -> torch.Tensor:
        return torch.randn(cout, cin, 1, 1, generator=gen) * (2.0 / cin) ** 0.5

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        mixed = [F.conv2d(f, getattr(self, f"ccm{i}")) for i, f in enumerate(feats)]
        out = [None] * self.scales
        below = None
        for i in reversed(range(self.scales)):
            x = mixed[i]
            if below is not None:
                x = x + F.interpolate(below, size=x.shape[-2:], mode="bilinear", align_corners=False)
            out[i] = F.conv2d(x, getattr(self, f"csm{i}"))
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
        # The frozen ImageNet network is a plain attribute, loaded on first use: checkpoints hold only what is
        # built here (its weights come from the installed package), and reading one needs no ImageNet weights.
        self.__dict__["_features"] = None
        self._weights = weights
        self.mixing = ScaleMixing()
        sizes = [self.feature_resolution // s for s in (4, 8, 16, 32)]  # each scale keeps its feature map's size
        self.discs = nn.ModuleList([ScaleDiscriminator(c, r) for c, r in zip(self.mixing.out_channels, sizes)])

    @property
    def features(self):
        if self.__dict__["_features"] is None:
            net = load_efficientnet_lite0(self._weights)
            device = next(self.discs.parameters()).device
            self.__dict__["_features"] = net.to(device)
        return self.__dict__["_features"]

    def _apply(self, fn, recurse=True):
        # .to(device) reaches the frozen feature network too, once it is loaded.
        if self.__dict__["_features"] is not None:
            self.__dict__["_features"] = self.__dict__["_features"]._apply(fn)
        return super()._apply(fn, recurse)

    def forward(self, img: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        x = img.float()
        if x.shape[-1] != self.feature_resolution:
            x = F.interpolate(x, size=(self.feature_resolution,) * 2, mode="bilinear", align_corners=False,
                              antialias=x.shape[-1] > self.feature_resolution)
        feats = self.features.features(self.features.normalize((x + 1) / 2))
        return torch.cat([d(f) for d, f in zip(self.discs, self.mixing(feats))], dim=1)


class ProjectedAndNativeDiscriminator(nn.Module, Growable):
    """The native discriminator's logit (column 0) beside the projected one's logits.

    ``logit_groups`` tells the loss which columns belong to which discriminator, so that each counts as much as
    the other whatever its number of logits; ``r1_module`` is the part the R1 penalty regularises (through the
    frozen feature network it would cost several times a step)."""

    def __init__(self, native: nn.Module, projected: ProjectedDiscriminator):
        super().__init__()
        self.init_growth(projected.max_resolution)
        self.min_resolution = projected.min_resolution
        self.native, self.projected = native, projected
        self.logit_groups = (slice(0, 1), slice(1, None))

    @property
    def r1_module(self) -> nn.Module:
        return self.native

    def input_side_parameters(self, blocks: int) -> list[nn.Parameter]:
        return self.native.input_side_parameters(blocks)  # the projected D's features are frozen already

    def forward(self, img: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        return torch.cat([self.native(img, c).reshape(img.shape[0], -1), self.projected(img, c)], dim=1)
