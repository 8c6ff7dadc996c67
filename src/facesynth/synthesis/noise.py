"""Stochastic variation (Karras et al. 2019, figures 4 and 5): one w, many noise draws.

The noise inputs should change only stochastic detail (strands of hair, freckles, skin
pores, background texture) and leave the person as they are; the per-pixel standard
deviation over the draws shows where they act.  Noise can be kept in some layer groups
only, to see what coarse and fine noise do.
"""

from __future__ import annotations

import contextlib

import torch

from ..errors import FacesynthError
from ..nets.layers import NoiseInjection
from .styles import STYLE_GROUPS, synthesize

# The rows of the figure: noise everywhere, in one group of layers only, nowhere.
VARIANTS = ("all", "coarse", "middle", "fine", "none")


def noise_layers(G) -> list[tuple[int, NoiseInjection]]:
    """(resolution, module) of every noise input that runs at the generator's current size."""
    top = getattr(G.synthesis, "output_resolution", None)
    found = [(m.const_noise.shape[-1], m) for m in G.synthesis.modules() if isinstance(m, NoiseInjection)]
    return [(r, m) for r, m in found if top is None or r <= top]


@contextlib.contextmanager
def noise_only_at(G, keep):
    """Within the block, noise inputs whose resolution fails ``keep(resolution)`` add nothing."""
    handles = [m.register_forward_hook(lambda mod, args, out: args[0])
               for r, m in noise_layers(G) if not keep(r)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def variant_filter(variant: str):
    if variant == "all":
        return lambda r: True
    if variant == "none":
        return lambda r: False
    lo, hi = STYLE_GROUPS[variant]
    return lambda r: r >= lo and (hi is None or r <= hi)


@torch.no_grad()
def noise_draws(G, ws: torch.Tensor, draws: int, seed: int = 0, variant: str = "all",
                batch: int = 16) -> torch.Tensor:
    """[draws, C, H, W]: the single ``ws`` [1, num_ws, w_dim] rendered with ``draws`` noise samples.

    The noise comes from a forked RNG seeded by ``seed``, so the same call gives the same images
    and the caller's random state is left untouched.
    """
    if variant not in VARIANTS:
        raise FacesynthError(f"noise variant must be one of {', '.join(VARIANTS)}, not {variant!r}")
    device = next(G.parameters()).device
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), noise_only_at(G, variant_filter(variant)):
        torch.manual_seed(seed)
        return synthesize(G, ws.expand(draws, -1, -1), noise_mode="random", batch=batch)


def pixel_std(images: torch.Tensor) -> torch.Tensor:
    """[H, W]: standard deviation of each pixel over the draws, averaged over colour channels."""
    return images.float().std(dim=0).mean(dim=0)


@torch.no_grad()
def stochastic_variation(G, ws: torch.Tensor, draws: int = 16, seed: int = 0,
                         variants: tuple[str, ...] = VARIANTS, batch: int = 16) -> dict[str, dict]:
    """Per variant: ``images`` (the draws) and ``std`` (per-pixel std).  Groups the model does not
    have (no 64² layers on a 32² model) are left out."""
    if not noise_layers(G):
        raise FacesynthError("this generator has no noise inputs (ProGAN); stochastic variation needs a "
                             "style-based generator")
    if draws < 2:
        raise FacesynthError("need at least 2 noise draws for a standard deviation")
    present = {r for r, _ in noise_layers(G)}
    out = {}
    for v in variants:
        if v not in ("all", "none") and not any(variant_filter(v)(r) for r in present):
            continue
        images = noise_draws(G, ws, draws, seed, v, batch)
        out[v] = {"images": images, "std": pixel_std(images)}
    return out


def std_image(std: torch.Tensor, scale: float) -> torch.Tensor:
    """A [3, H, W] picture in [-1, 1] of a std map: black = no variation, white = ``scale`` or more."""
    x = (std / max(scale, 1e-8)).clamp(0, 1) * 2 - 1
    return x.unsqueeze(0).expand(3, -1, -1)
