"""Perceptual path length (Karras et al. 2019), with stylegan2-ada-pytorch's sampling.

For each sample: two latents z0, z1; in Z the path is slerp(z0, z1, t), in W it is lerp(w0, w1, t) on
every layer's w.  "end" sampling (the default, as stylegan2-ada's ``ppl_zend`` / ``ppl_wend``) takes
t = 0; "full" takes t ~ U(0, 1).  Both ends t and t + ε (ε = 1e-4) are synthesized with the same noise
(fresh per batch), cropped to the face centre (rows 3/8..7/8, columns 2/8..6/8, as the paper does for
faces), area-down-sampled to 256 when larger, and compared with a perceptual distance d;
PPL = mean of d / ε² after discarding values below the 1st and above the 99th percentile.
The distance is LPIPS-VGG16 when its weights are given, else the Inception distance of
``perceptual.py``, whose numbers are *not* comparable with published PPL.
"""

from __future__ import annotations

import sys

import numpy as np
import torch
from tqdm import tqdm

from ..synthesis.interpolate import slerp
from .sources import module_device

EPSILON = 1e-4


def face_crop(images: torch.Tensor) -> torch.Tensor:
    c = images.shape[2] // 8
    return images[:, :, 3 * c:7 * c, 2 * c:6 * c]


def downsample_to_256(images: torch.Tensor, resolution: int) -> torch.Tensor:
    factor = resolution // 256
    if factor <= 1:
        return images
    n, ch, h, w = images.shape
    return images.reshape(n, ch, h // factor, factor, w // factor, factor).mean(dim=(3, 5))


class _RandomNoise:
    """Fills the generator's const noise maps with fresh noise for one batch, restoring them afterwards."""

    def __init__(self, G):
        self.buffers = [b for name, b in G.named_buffers() if name.endswith("const_noise")]
        self.saved = [b.detach().clone() for b in self.buffers]

    def refresh(self, gen: torch.Generator) -> None:
        for b in self.buffers:
            b.copy_(torch.randn(b.shape, generator=gen).to(b.device, b.dtype))

    def restore(self) -> None:
        for b, s in zip(self.buffers, self.saved):
            b.copy_(s)


def _sample_distances(G, distance, space: str, n: int, sampling: str, gen: torch.Generator,
                      epsilon: float, crop: bool) -> torch.Tensor:
    device = module_device(G)
    z = torch.randn(2 * n, G.z_dim, generator=gen).to(device)
    z0, z1 = z[:n], z[n:]
    t = torch.rand(n, 1, generator=gen).to(device) * (1.0 if sampling == "full" else 0.0)
    if space == "w":
        ws = G.mapping(z)
        w0, w1 = ws[:n], ws[n:]
        tt = t.unsqueeze(2)
        ws_pair = torch.cat([w0.lerp(w1, tt), w0.lerp(w1, tt + epsilon)])
    else:
        ws_pair = G.mapping(torch.cat([slerp(z0, z1, t), slerp(z0, z1, t + epsilon)]))
    img = G.synthesis(ws_pair, noise_mode="const").float()
    resolution = img.shape[-1]
    if crop:
        img = face_crop(img)
    img = downsample_to_256(img, resolution)
    return distance(img[:n], img[n:]).double().cpu() / epsilon ** 2


@torch.no_grad()
def perceptual_path_length(G, distance, space: str = "w", num: int = 50_000, batch: int = 16,
                           sampling: str = "end", epsilon: float = EPSILON, crop: bool = True, seed: int = 0,
                           quiet: bool = False) -> float:
    """PPL of generator ``G`` in ``space`` ("w" or "z") over ``num`` samples."""
    if space not in ("w", "z"):
        raise ValueError(f"space must be 'w' or 'z', not {space!r}")
    if sampling not in ("end", "full"):
        raise ValueError(f"sampling must be 'end' or 'full', not {sampling!r}")
    gen = torch.Generator().manual_seed(seed)
    noise = _RandomNoise(G)
    dists = []
    try:
        with tqdm(total=num, desc=f"ppl_{space}", unit="img", file=sys.stderr, disable=quiet, dynamic_ncols=True,
                  mininterval=1.0) as bar:
            for start in range(0, num, batch):
                n = min(batch, num - start)
                noise.refresh(gen)
                dists.append(_sample_distances(G, distance, space, n, sampling, gen, epsilon, crop))
                bar.update(n)
    finally:
        noise.restore()
    d = torch.cat(dists).numpy()
    lo = np.percentile(d, 1, method="lower")
    hi = np.percentile(d, 99, method="higher")
    return float(d[(d >= lo) & (d <= hi)].mean())
