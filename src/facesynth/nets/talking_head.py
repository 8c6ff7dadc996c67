"""The few-shot talking-head networks of Zakharov et al. 2019 ("Few-Shot Adversarial Learning of
Realistic Neural Talking Head Models").

* ``Embedder`` E(frame, landmark image) -> a vector per frame; a person's embedding is the mean over
  their K frames.
* ``TalkingHeadGenerator`` G(landmark image, psi): residual down-sampling blocks with instance norm,
  then residual and up-sampling residual blocks whose every normalisation is AdaIN; the AdaIN
  parameters psi are projected from the embedding (psi = P e).  Fine-tuning replaces P e by a free
  psi' initialised from it, which is why ``forward`` takes psi, not e.
* ``ProjectionDiscriminator`` D(frame, landmark image, video): a residual encoder like E's, an extra
  residual block, sum pooling, then the projection score v . (W_i + w0) + b, where W holds one
  vector per training video.  It also returns its block activations for the feature-matching loss.

Every convolution and linear layer is spectrally normalised, as in the paper; self-attention
(SAGAN) sits at the resolutions listed in the config.  Images and landmark drawings are in [-1, 1].
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm


def _sn(module: nn.Module, enabled: bool) -> nn.Module:
    return spectral_norm(module) if enabled else module


def conv(cin: int, cout: int, k: int, sn: bool) -> nn.Module:
    return _sn(nn.Conv2d(cin, cout, k, padding=k // 2), sn)


class SelfAttention(nn.Module):
    """SAGAN self-attention; the output gate starts at 0 so a new block begins as the identity."""

    def __init__(self, channels: int, sn: bool):
        super().__init__()
        inner = max(channels // 8, 1)
        self.query, self.key = conv(channels, inner, 1, sn), conv(channels, inner, 1, sn)
        self.value = conv(channels, channels, 1, sn)
        self.gamma = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        q = self.query(x).flatten(2)  # [N, C', HW]
        k = self.key(x).flatten(2)
        attn = torch.softmax(q.transpose(1, 2) @ k, dim=-1)  # [N, HW, HW]
        out = (self.value(x).flatten(2) @ attn.transpose(1, 2)).view(n, c, h, w)
        return x + self.gamma * out


class ResBlockDown(nn.Module):
    """Pre-activation residual block halving the resolution (BigGAN's D block); optional instance norm."""

    def __init__(self, cin: int, cout: int, sn: bool, norm: bool = False, first: bool = False):
        super().__init__()
        self.first = first  # the block that reads the image skips the leading ReLU
        self.conv1, self.conv2 = conv(cin, cout, 3, sn), conv(cout, cout, 3, sn)
        self.skip = conv(cin, cout, 1, sn)
        self.norm1 = nn.InstanceNorm2d(cin, affine=True) if norm else nn.Identity()
        self.norm2 = nn.InstanceNorm2d(cout, affine=True) if norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        h = self.conv1(h if self.first else F.relu(h))
        h = self.conv2(F.relu(self.norm2(h)))
        return F.avg_pool2d(h, 2) + F.avg_pool2d(self.skip(x), 2)


class ResBlock(nn.Module):
    """Residual block at constant resolution, with AdaIN (G) or without normalisation (E, D)."""

    def __init__(self, channels: int, sn: bool, adain: bool):
        super().__init__()
        self.conv1, self.conv2 = conv(channels, channels, 3, sn), conv(channels, channels, 3, sn)
        self.adain_channels = [channels, channels] if adain else []

    def forward(self, x: torch.Tensor, psi: list[torch.Tensor] | None = None) -> torch.Tensor:
        h = adain(x, *psi[0]) if psi else x
        h = self.conv1(F.relu(h))
        h = adain(h, *psi[1]) if psi else h
        return x + self.conv2(F.relu(h))


class ResBlockUp(nn.Module):
    """AdaIN residual block doubling the resolution (nearest up-sampling, as BigGAN's G block)."""

    def __init__(self, cin: int, cout: int, sn: bool):
        super().__init__()
        self.conv1, self.conv2 = conv(cin, cout, 3, sn), conv(cout, cout, 3, sn)
        self.skip = conv(cin, cout, 1, sn)
        self.adain_channels = [cin, cout]

    def forward(self, x: torch.Tensor, psi: list[torch.Tensor]) -> torch.Tensor:
        h = F.interpolate(F.relu(adain(x, *psi[0])), scale_factor=2.0, mode="nearest")
        h = self.conv2(F.relu(adain(self.conv1(h), *psi[1])))
        return h + self.skip(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def adain(x: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Instance-normalise, then apply per-sample (1 + scale) and bias: a zero psi is plain instance norm."""
    mean = x.mean(dim=(2, 3), keepdim=True)
    std = (x.var(dim=(2, 3), keepdim=True, unbiased=False) + eps).sqrt()
    return (x - mean) / std * (1 + scale[:, :, None, None]) + bias[:, :, None, None]


def channel_plan(resolution: int, base: int, maximum: int, blocks: int) -> list[int]:
    """Channels after each of ``blocks`` halvings: base, 2 base, ... capped at ``maximum``."""
    return [min(base * 2 ** i, maximum) for i in range(blocks)]


class ResidualEncoder(nn.Module):
    """(frame, landmark image) -> block activations; shared design of the embedder and the discriminator."""

    def __init__(self, resolution: int, base: int, maximum: int, extra_block: bool, attention: tuple[int, ...],
                 sn: bool):
        super().__init__()
        blocks = int(math.log2(resolution)) - 2  # down to 4x4
        chans = channel_plan(resolution, base, maximum, blocks)
        layers, cin, res = [], 6, resolution
        for i, c in enumerate(chans):
            layers.append(ResBlockDown(cin, c, sn, first=i == 0))
            cin, res = c, res // 2
            if res in attention:
                layers.append(SelfAttention(c, sn))
        if extra_block:
            layers.append(ResBlock(cin, sn, adain=False))
        self.blocks = nn.ModuleList(layers)
        self.out_channels = cin

    def forward(self, frame: torch.Tensor, landmarks: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        h = torch.cat([frame, landmarks], dim=1)
        feats = []
        for block in self.blocks:
            h = block(h)
            feats.append(h)
        return F.relu(h).sum(dim=(2, 3)), feats  # global sum pooling after a ReLU, as the paper


class Embedder(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.encoder = ResidualEncoder(cfg.resolution, cfg.base_channels, cfg.max_channels, False,
                                       tuple(cfg.attention), cfg.spectral_norm)
        self.out = _sn(nn.Linear(self.encoder.out_channels, cfg.embed_dim), cfg.spectral_norm)

    def forward(self, frames: torch.Tensor, landmarks: torch.Tensor) -> torch.Tensor:
        """[N, K, 3, H, W] frames and their landmark images -> [N, D], the mean of the K embeddings."""
        n, k = frames.shape[:2]
        pooled, _ = self.encoder(frames.flatten(0, 1), landmarks.flatten(0, 1))
        return self.out(pooled).view(n, k, -1).mean(dim=1)


class TalkingHeadGenerator(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        sn, res = cfg.spectral_norm, cfg.resolution
        down = channel_plan(res, cfg.base_channels, cfg.max_channels, cfg.g_down_blocks)
        self.down = nn.ModuleList()
        cin = 3
        for i, c in enumerate(down):
            self.down.append(ResBlockDown(cin, c, sn, norm=i > 0, first=i == 0))
            cin, res = c, res // 2
            if res in cfg.attention:
                self.down.append(SelfAttention(c, sn))
        self.middle = nn.ModuleList(ResBlock(cin, sn, adain=True) for _ in range(cfg.g_res_blocks))
        self.up = nn.ModuleList()
        for c in reversed([cfg.base_channels // 2] + down[:-1]):
            self.up.append(ResBlockUp(cin, c, sn))
            cin, res = c, res * 2
            if res in cfg.attention:
                self.up.append(SelfAttention(c, sn))
        self.final_channels = cin
        self.to_rgb = conv(cin, 3, 3, sn)
        # psi's layout: (scale, bias) per AdaIN layer, in the order they are applied, the last one before toRGB.
        self.adain_channels = [c for b in list(self.middle) + list(self.up) for c in getattr(b, "adain_channels", [])]
        self.adain_channels.append(cin)
        self.psi_dim = 2 * sum(self.adain_channels)
        self.project = _sn(nn.Linear(cfg.embed_dim, self.psi_dim, bias=False), sn)  # P

    def psi(self, embedding: torch.Tensor) -> torch.Tensor:
        return self.project(embedding)

    def _split(self, psi: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        parts, at = [], 0
        for c in self.adain_channels:
            parts.append((psi[:, at:at + c], psi[:, at + c:at + 2 * c]))
            at += 2 * c
        return parts

    def forward(self, landmarks: torch.Tensor, psi: torch.Tensor) -> torch.Tensor:
        """Landmark images [N, 3, H, W] and AdaIN parameters [N, psi_dim] -> images in [-1, 1]."""
        params = iter(self._split(psi))
        h = landmarks
        for block in self.down:
            h = block(h)
        for block in list(self.middle) + list(self.up):
            h = block(h, [next(params) for _ in block.adain_channels]) if hasattr(block, "adain_channels") else block(h)
        return torch.tanh(self.to_rgb(F.relu(adain(h, *next(params)))))


class ProjectionDiscriminator(nn.Module):
    def __init__(self, cfg, num_videos: int):
        super().__init__()
        self.encoder = ResidualEncoder(cfg.resolution, cfg.base_channels, cfg.max_channels, True,
                                       tuple(cfg.attention), cfg.spectral_norm)
        self.out = _sn(nn.Linear(self.encoder.out_channels, cfg.embed_dim), cfg.spectral_norm)
        self.W = nn.Parameter(torch.randn(num_videos, cfg.embed_dim) * 0.02)  # one vector per training video
        self.w0 = nn.Parameter(torch.zeros(cfg.embed_dim))
        self.b = nn.Parameter(torch.zeros(()))

    def forward(self, frame: torch.Tensor, landmarks: torch.Tensor, video: torch.Tensor | None = None,
                w: torch.Tensor | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Realism scores [N] and block activations.  ``video`` indexes W; fine-tuning passes its own ``w``
        (a person's vector that replaces W_i + w0)."""
        pooled, feats = self.encoder(frame, landmarks)
        v = self.out(pooled)
        if w is None:
            w = self.W[video] + self.w0
        return (v * w).sum(dim=1) + self.b, feats


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


__all__ = ["Embedder", "TalkingHeadGenerator", "ProjectionDiscriminator", "adain", "parameter_count"]
