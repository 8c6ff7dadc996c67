"""Finding a photo in the generator's latent space (StyleGAN2, Karras et al. 2020, section 5).

Gradient descent on w — one vector for every layer (``space="w"``) or one per layer
(``"w+"``) — and on the per-layer noise maps, from the mean w: Adam with a learning rate
that ramps up over the first 5% of the steps and down (cosine) over the last 25%; Gaussian
noise added to w, shrinking to nothing by 75% of the way, to explore early; the noise maps
kept at zero mean and unit variance and pushed toward spatial whiteness at every scale, so
they cannot smuggle the image in.  The loss is a perceptual distance plus a pixel MSE.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..errors import FacesynthError
from .noise import noise_layers

SPACES = ("w", "w+")


@dataclass
class ProjectionSettings:
    space: str = "w"
    steps: int = 500
    lr: float = 0.1
    pixel_weight: float = 1.0  # weight of the pixel MSE (images in [-1, 1]) beside the perceptual distance
    noise_regularize: float = 1e5
    initial_w_noise: float = 0.05  # w noise at the start, in units of the spread of w
    w_noise_ramp: float = 0.75
    lr_rampup: float = 0.05
    lr_rampdown: float = 0.25
    optimize_noise: bool = True
    seed: int = 0
    record_every: int = 10  # keep a reconstruction every N steps (for the optimisation video)

    def check(self) -> ProjectionSettings:
        if self.space not in SPACES:
            raise FacesynthError(f"projection space must be w or w+, not {self.space!r}")
        if self.steps < 1:
            raise FacesynthError(f"projection needs at least one step, got {self.steps}")
        return self


@dataclass
class Projection:
    ws: torch.Tensor  # [1, num_ws, w_dim]
    noise: list[torch.Tensor]  # the optimised noise maps, in the generator's layer order
    image: torch.Tensor  # [1, C, R, R] in [-1, 1]
    frames: list[torch.Tensor] = field(default_factory=list)
    losses: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    settings: ProjectionSettings | None = None


@torch.no_grad()
def w_statistics(G, samples: int = 10_000, seed: int = 123, batch: int = 1000) -> tuple[torch.Tensor, float]:
    """Mean w [1, w_dim] and its spread (root mean squared distance from the mean) over ``samples`` z."""
    device = next(G.parameters()).device
    z = torch.from_numpy(np.random.RandomState(seed).randn(samples, G.z_dim)).float()
    w = torch.cat([G.mapping(c.to(device))[:, 0] for c in z.split(batch)])
    mean = w.mean(0, keepdim=True)
    return mean, float((w - mean).square().sum(1).mean().sqrt())


def noise_regularization(maps: list[torch.Tensor]) -> torch.Tensor:
    """Squared autocorrelation at one-pixel shifts, summed over a pyramid of each map down to 8x8."""
    loss = 0.0
    for n in maps:
        while True:
            loss = loss + (n * n.roll(1, dims=3)).mean().square() + (n * n.roll(1, dims=2)).mean().square()
            if n.shape[-1] <= 8:
                break
            n = F.avg_pool2d(n, 2)
    return loss


@contextlib.contextmanager
def explicit_noise(G, maps: list[torch.Tensor]):
    """Within the block, noise_mode='const' reads ``maps`` instead of the generator's fixed noise."""
    layers = [m for _, m in noise_layers(G)]
    saved = [m.const_noise for m in layers]
    try:
        for m, t in zip(layers, maps):
            m.const_noise = t
        yield
    finally:
        for m, t in zip(layers, saved):
            m.const_noise = t


def _lr_at(t: float, s: ProjectionSettings) -> float:
    ramp = min(1.0, (1.0 - t) / s.lr_rampdown)
    ramp = 0.5 - 0.5 * math.cos(ramp * math.pi)
    return s.lr * ramp * min(1.0, t / s.lr_rampup)


def project(G, target: torch.Tensor, distance, settings: ProjectionSettings | None = None,
            quiet: bool = False, progress: Callable[[int, int], None] | None = None) -> Projection:
    """Optimise a latent (and noise) so that G draws ``target`` ([1, C, R, R] in [-1, 1] at G's resolution).

    ``distance(a, b)`` is a differentiable perceptual distance returning [N] (e.g. the ``distance`` method
    of ``metrics.perceptual.InceptionDistance``, or an LPIPS module).  ``progress(done, total)`` is called
    after every step (the web server's job progress); G's noise buffers are swapped while this runs, so
    give it a network no other thread is drawing with.
    """
    s = (settings or ProjectionSettings()).check()
    device = next(G.parameters()).device
    res = G.synthesis.output_resolution if hasattr(G.synthesis, "output_resolution") else G.cfg.resolution
    if target.ndim != 4 or target.shape[0] != 1 or tuple(target.shape[-2:]) != (res, res):
        raise FacesynthError(f"the target must be one {res}x{res} image, got shape {list(target.shape)}")
    target = target.to(device, torch.float32)
    w_avg, w_std = w_statistics(G)
    num_ws = G.num_ws
    start = w_avg.unsqueeze(1).repeat(1, num_ws if s.space == "w+" else 1, 1)
    w_opt = start.clone().requires_grad_(True)
    gen = torch.Generator().manual_seed(s.seed)
    maps = [torch.randn(m.const_noise.shape, generator=gen).to(device).requires_grad_(s.optimize_noise)
            for _, m in noise_layers(G)]
    params = [w_opt] + (maps if s.optimize_noise else [])
    opt = torch.optim.Adam(params, betas=(0.9, 0.999), lr=s.lr)
    frames, losses = [], []
    t0 = time.perf_counter()
    bar = tqdm(range(s.steps), desc=f"project ({s.space})", unit="step", disable=quiet)
    with explicit_noise(G, maps):
        for step in bar:
            t = step / s.steps
            w_noise = w_std * s.initial_w_noise * max(0.0, 1.0 - t / s.w_noise_ramp) ** 2
            for group in opt.param_groups:
                group["lr"] = _lr_at(t, s)
            w = w_opt + torch.randn(w_opt.shape, generator=gen).to(device) * w_noise
            image = G.synthesis(w.expand(1, num_ws, -1), noise_mode="const")
            perceptual = distance(image, target).sum()
            pixel = (image - target).square().mean()
            reg = noise_regularization(maps) if s.optimize_noise else torch.zeros(())
            loss = perceptual + s.pixel_weight * pixel + s.noise_regularize * reg
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                for n in maps:
                    n -= n.mean()
                    n *= n.square().mean().rsqrt()
            losses.append({"step": step, "perceptual": perceptual.item(), "pixel": pixel.item(),
                           "noise_reg": float(reg.detach()), "loss": loss.item()})
            if step % s.record_every == 0:
                frames.append(image.detach().cpu())
            bar.set_postfix(dist=f"{losses[-1]['perceptual']:.3f}", mse=f"{losses[-1]['pixel']:.4f}")
            if progress is not None:
                progress(step + 1, s.steps)
        with torch.no_grad():
            ws = w_opt.detach().expand(1, num_ws, -1).clone()
            final = G.synthesis(ws, noise_mode="const").cpu()
    frames.append(final)
    return Projection(ws=ws.cpu(), noise=[n.detach().cpu() for n in maps], image=final, frames=frames,
                      losses=losses, seconds=time.perf_counter() - t0, settings=s)
