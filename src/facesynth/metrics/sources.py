"""Where metric images come from: a data set (uint8 as stored) or a generator (seeded, quantized to uint8)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import torch

from ..data.loader import ImageDataset
from ..synthesis.generate import seed_latents


def generator_resolution(G) -> int:
    return int(G.synthesis.output_resolution)


def module_device(G) -> torch.device:
    return next(G.parameters()).device


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> uint8 exactly as stylegan2-ada's metrics do: x * 127.5 + 128, clamped, truncated (= rounded)."""
    return (images * 127.5 + 128).clamp(0, 255).to(torch.uint8)


def open_dataset(path: str | os.PathLike, resolution: int, quiet: bool = False) -> ImageDataset:
    """The real images at the generator's resolution (resized on load when the data set is stored at another)."""
    return ImageDataset(Path(path), resolution, quiet=quiet)


def open_generated_images(path: str | os.PathLike, quiet: bool = False) -> ImageDataset:
    """A folder or zip of generated images, at the size of the first one (square, a power of two)."""
    from ..data.images import ImageSource, decode_image
    from ..errors import FacesynthError

    path = Path(path)
    if not path.exists():
        raise FacesynthError(f"{path}: no such folder or zip of generated images")
    source = ImageSource(path)
    if len(source) == 0:
        raise FacesynthError(f"{path}: no images found")
    h, w = decode_image(source.read(0), source.names[0]).shape[:2]
    if h != w or h < 4 or h & (h - 1):
        raise FacesynthError(f"{path}: generated images must be square with a power-of-two side; "
                             f"{source.names[0]} is {w}x{h}")
    return ImageDataset(path, h, quiet=quiet)


def subset_indices(size: int, num: int | None, seed: int = 0) -> list[int]:
    """Which real images a metric uses: all, or a fixed random subset of ``num``.

    Never the first ``num``: stored order is often meaningful (UTKFace file names sort by age), and a
    sorted slice would be a biased sample.
    """
    if num is None or num >= size:
        return list(range(size))
    perm = torch.randperm(size, generator=torch.Generator().manual_seed(seed))
    return sorted(perm[:num].tolist())


def dataset_batches(dataset: ImageDataset, batch: int, num: int | None = None) -> Iterator[torch.Tensor]:
    """The images of ``subset_indices`` in index order, as uint8 [B, 3, R, R] CPU tensors."""
    indices = subset_indices(len(dataset), num)
    if dataset.images is not None:
        for start in range(0, len(indices), batch):
            yield torch.from_numpy(dataset.images[indices[start:start + batch]])
        return
    subset = torch.utils.data.Subset(dataset, indices)
    workers = min(4, os.cpu_count() or 1)
    yield from torch.utils.data.DataLoader(subset, batch_size=batch, num_workers=workers, shuffle=False)


@torch.no_grad()
def generated(G, num: int, batch: int, seed: int = 0, truncation_psi: float = 1.0,
              noise_mode: str = "random", truncation_cutoff: int | None = None) -> Iterator[torch.Tensor]:
    """Images of seeds ``seed .. seed + num - 1`` in [-1, 1] on G's device, ``batch`` at a time.

    z comes from ``seed_latents`` (the same z as ``facesynth generate --seeds``); per-pixel noise is
    drawn from an RNG forked and seeded with each batch's first seed, so a run is reproducible and the
    caller's global RNG state is left alone.
    """
    device = module_device(G)
    devices = [device] if device.type == "cuda" else []
    for start in range(0, num, batch):
        seeds = list(range(seed + start, seed + min(start + batch, num)))
        z = seed_latents(seeds, G.z_dim).to(device)
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seeds[0])
            yield G(z, truncation_psi, truncation_cutoff, noise_mode=noise_mode).float()


def generator_batches(G, num: int, batch: int, seed: int = 0, truncation_psi: float = 1.0,
                      noise_mode: str = "random", truncation_cutoff: int | None = None) -> Iterator[torch.Tensor]:
    """Generated images as uint8 [B, C, R, R], quantized like the real images they are compared with."""
    for images in generated(G, num, batch, seed, truncation_psi, noise_mode, truncation_cutoff):
        yield to_uint8(images)
