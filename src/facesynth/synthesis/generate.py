"""Images from seeds: z -> w (with truncation) -> image, batched, with the EMA generator."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from ..errors import FacesynthError
from ..util.grid import make_grid, save_png, to_uint8

MAX_SEEDS = 100_000


def parse_seeds(spec: str) -> list[int]:
    """'0-15', '1,5,9' or '0-3,10' -> list of ints."""
    seeds: list[int] = []
    for part in str(spec).split(","):
        part = part.strip()
        if not part:
            continue
        m = re.fullmatch(r"(\d+)\s*-\s*(\d+)", part)
        if m:
            a, b = int(m.group(1)), int(m.group(2))
            if b < a:
                raise FacesynthError(f"seed range {part!r} runs backwards")
            if b - a + 1 + len(seeds) > MAX_SEEDS:
                raise FacesynthError(f"too many seeds (at most {MAX_SEEDS})")
            seeds.extend(range(a, b + 1))
        elif part.isdigit():
            seeds.append(int(part))
        else:
            raise FacesynthError(f"bad seed {part!r}: use numbers like 0-15 or 1,5,9")
    if not seeds:
        raise FacesynthError("no seeds given")
    return seeds


def seed_latents(seeds: list[int], z_dim: int) -> torch.Tensor:
    """The z of each seed, identical to what every other facesynth command uses for that seed."""
    return torch.from_numpy(np.stack([np.random.RandomState(s % 2**32).randn(z_dim) for s in seeds])).float()


@torch.no_grad()
def generate_images(G, seeds: list[int], truncation_psi: float = 1.0, truncation_cutoff: int | None = None,
                    noise_mode: str = "const", batch: int = 16,
                    device: str | torch.device | None = None) -> torch.Tensor:
    """Images in [-1, 1], [N, C, H, W], on the CPU."""
    if noise_mode not in ("random", "const", "none"):
        raise FacesynthError(f"noise must be random, const or none, not {noise_mode!r}")
    device = device or next(G.parameters()).device
    z = seed_latents(seeds, G.z_dim)
    out = []
    devices = [device] if torch.device(device).type == "cuda" else []
    for i, zb in enumerate(z.split(batch)):
        # Random noise is drawn from a forked RNG seeded by the batch's first seed: reproducible,
        # and the caller's global RNG is left as it was.
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seeds[i * batch])
            out.append(G(zb.to(device), truncation_psi, truncation_cutoff, noise_mode=noise_mode).cpu())
    return torch.cat(out)


def save_images(images: torch.Tensor, seeds: list[int], out: str | Path, cols: int | None = None,
                mark=None) -> list[Path]:
    """A .png/.jpg path -> one grid; anything else -> a folder with seedNNNN.png per image.  ``mark``: the
    provenance.Provenance each file states (with its seeds added)."""
    out = Path(out)
    if out.suffix.lower() in (".png", ".jpg", ".jpeg"):
        save_png(make_grid(images, cols), out, mark and mark.with_params(seeds=seeds))
        return [out]
    paths = []
    for img, s in zip(to_uint8(images), seeds):
        p = out / f"seed{s:04d}.png"
        save_png(img, p, mark and mark.with_params(seed=s))
        paths.append(p)
    return paths
