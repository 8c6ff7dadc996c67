"""A warping talking head: the source's own pixels and features, moved by a landmark-driven motion field.

* ``MotionNetwork``: from the TPS-warped source, the TPS-warped source landmark image, the driving
  landmark image and the TPS displacement (at half the resolution), a small U-Net predicts a correction of
  the TPS flow, an occlusion map (where the warped source can be trusted) and a confidence logit (which of
  K sources to read where).  Its flow head starts at zero, so an untrained model is the plain TPS warp.
* ``WarpGenerator``: encodes each source at four scales, warps every scale's features with the motion
  field (grid_sample), multiplies them by the occlusion map, averages the K sources by their softmax
  confidences, and decodes through residual blocks with the warped features added back at each scale.
  The output blends the warped source pixels with the decoded picture by a learned mask: copied where
  the warp is right, painted where something was hidden (the inside of a mouth, a turned cheek); with
  ``residual`` a correction is added everywhere on top.
* ``PatchDiscriminator``: a conditional patch discriminator on (frame, landmark image) that also returns
  its activations for feature matching.

The networks know nothing of landmarks' files: TPS grids come in, frames come out, all in [-1, 1].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from .tps import identity_grid, warp


def conv(cin: int, cout: int, k: int = 3, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2)


def act(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, 0.2)


class ResBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv1, self.conv2 = conv(channels, channels), conv(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(act(self.conv1(act(x))))


class UpBlock(nn.Module):
    """A 3x3 convolution to the skip connection's width, then double the size: convolving before
    enlarging costs a quarter, which is what keeps batch-1 rendering real-time on a CPU."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = conv(cin, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(self.conv(act(x)), scale_factor=2, mode="bilinear", align_corners=False)


MOTION_INPUTS = 3 + 3 + 3 + 2  # warped source, warped source landmarks, driving landmarks, TPS displacement


class MotionNetwork(nn.Module):
    def __init__(self, channels: list[int], flow_scale: float):
        super().__init__()
        c = channels
        self.flow_scale = flow_scale
        self.stem = conv(MOTION_INPUTS, c[0])
        self.down = nn.ModuleList(conv(a, b, stride=2) for a, b in zip(c[:-1], c[1:]))
        self.up = nn.ModuleList(UpBlock(b, a) for a, b in zip(c[:-1], c[1:]))
        self.head = conv(c[0], 4)  # flow (2), occlusion (1), confidence (1)
        nn.init.zeros_(self.head.weight)
        with torch.no_grad():
            self.head.bias.copy_(torch.tensor([0.0, 0.0, 3.0, 0.0]))  # occlusion starts at "visible"

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(flow [B, 2, h, w] in grid units, occlusion [B, 1, h, w] in 0..1, confidence logits [B, 1, h, w])."""
        skips = [self.stem(x)]
        for down in self.down:
            skips.append(down(act(skips[-1])))
        h = skips.pop()
        for up in reversed(self.up):
            h = up(h) + skips.pop()
        out = self.head(act(h))
        return self.flow_scale * torch.tanh(out[:, :2]), torch.sigmoid(out[:, 2:3]), out[:, 3:4]


class WarpGenerator(nn.Module):
    """G(sources, grids, motion inputs) -> frames; see ``forward``."""

    def __init__(self, cfg):
        super().__init__()
        self.resolution = cfg.resolution
        c = list(cfg.channels)
        self.motion = MotionNetwork(list(cfg.motion_channels), cfg.flow_scale)
        self.stem = conv(3, c[0])
        self.down = nn.ModuleList(conv(a, b, stride=2) for a, b in zip(c[:-1], c[1:]))
        self.blocks = nn.Sequential(*[ResBlock(c[-1]) for _ in range(cfg.res_blocks)])
        self.up = nn.ModuleList(UpBlock(b, a) for a, b in zip(c[:-1], c[1:]))
        self.to_rgb = conv(c[0], 4)  # picture (3) and the copy-or-paint mask (1)
        with torch.no_grad():
            self.to_rgb.weight.mul_(0.1)
            self.to_rgb.bias.zero_()
            self.to_rgb.bias[3] = cfg.copy_bias  # starts by mostly copying the warped source
        self.to_residual = None
        if cfg.residual:  # starts at zero: a model started from one without it renders as that one did
            self.to_residual = conv(c[0], 3)
            nn.init.zeros_(self.to_residual.weight)
            nn.init.zeros_(self.to_residual.bias)

    def encode(self, images: torch.Tensor) -> list[torch.Tensor]:
        feats = [self.stem(images)]
        for down in self.down:
            feats.append(down(act(feats[-1])))
        return feats

    def motion_fields(self, sources: torch.Tensor, source_drawings: torch.Tensor, drawing: torch.Tensor,
                      tps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Refined grids [BK, h, w, 2], occlusion [BK, 1, h, w] and confidence logits for flattened sources.

        ``sources``/``source_drawings`` [BK, 3, R, R], ``drawing`` [BK, 3, R, R] (each source's driving landmark
        image), ``tps`` [BK, h, w, 2] at the motion resolution."""
        h = tps.shape[1]
        small = lambda t: F.interpolate(t, size=(h, h), mode="bilinear", align_corners=False,  # noqa: E731
                                        antialias=True)
        ident = identity_grid(h, tps.device, tps.dtype)
        x = torch.cat([warp(small(sources), tps), warp(small(source_drawings), tps), small(drawing),
                       (tps - ident).permute(0, 3, 1, 2)], 1)
        flow, occlusion, confidence = self.motion(x)
        return tps + flow.permute(0, 2, 3, 1), occlusion, confidence

    def forward(self, sources: torch.Tensor, source_drawings: torch.Tensor, drawing: torch.Tensor,
                tps: torch.Tensor, features: list[torch.Tensor] | None = None) -> torch.Tensor:
        """Frames [B, 3, R, R] from K sources each.

        sources, source_drawings: [B, K, 3, R, R]; drawing: the driving landmark image [B, 3, R, R];
        tps: TPS grids [B, K, h, w, 2] from the driving landmarks to each source's; ``features``: the
        sources' encodings when already computed (a portrait animated over many frames is encoded once).
        """
        b, k = sources.shape[:2]
        flat = lambda t: t.reshape(b * k, *t.shape[2:])  # noqa: E731
        src = flat(sources)
        grid, occlusion, confidence = self.motion_fields(
            src, flat(source_drawings), drawing.repeat_interleave(k, 0), flat(tps))
        if features is None:
            features = self.encode(src)
        weights = torch.softmax(confidence.reshape(b, k, *confidence.shape[1:]), 1)  # over the K sources

        def merge(t: torch.Tensor) -> torch.Tensor:
            """Warp [BK, C, s, s] by the field, mask what is occluded, weigh the sources: [B, C, s, s]."""
            s = t.shape[-1]
            moved = warp(t, grid) * _resize(occlusion, s)
            return (moved.reshape(b, k, *moved.shape[1:]) * _resize(weights.flatten(0, 1), s).reshape(
                b, k, 1, s, s)).sum(1)

        skips = [merge(f) for f in features]
        x = self.blocks(skips.pop())
        for up in reversed(self.up):
            x = up(x) + skips.pop()
        out = self.to_rgb(act(x))
        copied = merge(src)  # the warped source pixels (occluded parts dimmed)
        mask = torch.sigmoid(out[:, 3:4])
        frame = mask * copied + (1 - mask) * torch.tanh(out[:, :3])
        if self.to_residual is not None:
            frame = frame + self.to_residual(act(x))
        return frame


def _resize(t: torch.Tensor, size: int) -> torch.Tensor:
    if t.shape[-1] == size:
        return t
    return F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)


class PatchDiscriminator(nn.Module):
    """Scores patches of (frame, landmark image); returns (scores [B, 1, h, w], activations)."""

    def __init__(self, cfg):
        super().__init__()
        c = list(cfg.d_channels)
        layers, cin = [], 6
        for cout in c:
            layers.append(spectral_norm(nn.Conv2d(cin, cout, 4, stride=2, padding=1)))
            cin = cout
        self.layers = nn.ModuleList(layers)
        self.score = spectral_norm(nn.Conv2d(cin, 1, 3, padding=1))

    def forward(self, image: torch.Tensor, drawing: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x, feats = torch.cat([image, drawing], 1), []
        for layer in self.layers:
            x = act(layer(x))
            feats.append(x)
        return self.score(x), feats


__all__ = ["MotionNetwork", "WarpGenerator", "PatchDiscriminator"]
