"""Training images: any source `ImageSource` reads, served as uint8 tensors at one resolution.

Small data sets (the usual case on one machine) are decoded once into memory;
larger ones are decoded on the fly by data-loader workers.  The order of images
is a seeded permutation per epoch, so a resumed run sees exactly the images an
uninterrupted run would have seen.
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..errors import FacesynthError
from .build import read_dataset_meta
from .images import BadImage, ImageSource, check_header, check_resolution, given_path, prepare_image, shown

PRELOAD_LIMIT_BYTES = int(float(os.environ.get("FACESYNTH_PRELOAD_GB", "6")) * 2**30)


class ImageDataset(torch.utils.data.Dataset):
    """uint8 [3, R, R] tensors from a folder, zip, array file or facesynth dataset zip."""

    def __init__(self, path: str | Path, resolution: int, square: str = "crop", preload: bool | None = None,
                 quiet: bool = False, max_images: int | None = None):
        check_resolution(resolution)
        self.path = given_path(path, "data")
        self.resolution = resolution
        self.square = square
        self.meta = read_dataset_meta(self.path)
        self.source = ImageSource(self.path)
        n = len(self.source) if max_images is None else min(max_images, len(self.source))
        if n == 0:
            raise FacesynthError(f"{shown(self.path)}: no images found")
        self.indices = np.arange(n)
        self.bad: list[str] = []  # one message per skipped file, naming it and its problem
        self.bad_problems: Counter = Counter()  # problem (data.images.PROBLEMS) -> files skipped
        # Files found bad while decoding on the fly, in memory shared with data-loader workers (forked or
        # spawned), so each is reported once by whichever process meets it first, not once per worker.
        self._reported = torch.zeros(n, dtype=torch.uint8).share_memory_()
        self.images: np.ndarray | None = None
        self._downscaled: dict[int, np.ndarray] = {}
        if preload is None:
            preload = n * 3 * resolution * resolution <= PRELOAD_LIMIT_BYTES
        if preload:
            self._preload(quiet)
        elif not _is_built_dataset(self.meta):
            self._check_headers(quiet)

    def _load(self, i: int) -> np.ndarray:
        name = self.source.names[i]
        return prepare_image(self.source.read(i), name, self.resolution, self.square)

    def _preload(self, quiet: bool) -> None:
        n = len(self.indices)
        out = np.empty((n, 3, self.resolution, self.resolution), dtype=np.uint8)
        ok = np.zeros(n, dtype=bool)

        def work(i):
            try:
                out[i] = self._load(int(self.indices[i])).transpose(2, 0, 1)
                ok[i] = True
                return None
            except BadImage as e:
                return e

        self._scan(work, n, f"loading {shown(self.path.name)}", quiet)
        if not ok.any():
            raise FacesynthError(f"{shown(self.path)}: none of the {n} files could be read as an image")
        self.images = out[ok] if not ok.all() else out
        self.indices = self.indices[ok]

    def _check_headers(self, quiet: bool) -> None:
        """Decoding on the fly: drop the files whose header already says they are bad (empty, not an image,
        a decompression bomb, too small, a strip), so that they are counted before training starts."""
        n = len(self.indices)
        ok = np.ones(n, dtype=bool)

        def work(i):
            name = self.source.names[int(self.indices[i])]
            try:
                check_header(self.source.read(int(self.indices[i])), name)
                return None
            except BadImage as e:
                ok[i] = False
                return e

        self._scan(work, n, f"checking {shown(self.path.name)}", quiet)
        if not ok.any():
            raise FacesynthError(f"{shown(self.path)}: none of the {n} files could be read as an image")
        self.indices = self.indices[ok]

    def _scan(self, work, n: int, desc: str, quiet: bool) -> None:
        workers = min(8, os.cpu_count() or 1)
        with ThreadPoolExecutor(workers) as pool:
            for err in tqdm(pool.map(work, range(n)), total=n, desc=desc, unit="img", disable=quiet,
                            file=sys.stderr, dynamic_ncols=True, mininterval=1.0):
                if err is not None:
                    self._skip(err)

    def _skip(self, err: BadImage) -> None:
        self.bad.append(str(err))
        self.bad_problems[err.problem] += 1
        tqdm.write(f"skipped {err}", file=sys.stderr)

    def __len__(self) -> int:
        return len(self.indices)

    def images_at(self, resolution: int) -> np.ndarray:
        """The preloaded images box-filtered down to ``resolution`` (computed once, then cached)."""
        if self.images is None:
            raise ValueError("images_at needs a preloaded data set")
        if resolution == self.resolution:
            return self.images
        if resolution not in self._downscaled:
            chunks = [box_downscale(torch.from_numpy(c), resolution).numpy()
                      for c in np.array_split(self.images, max(1, len(self.images) // 1024))]
            self._downscaled[resolution] = np.concatenate(chunks)
        return self._downscaled[resolution]

    def __getitem__(self, k: int) -> torch.Tensor:
        if self.images is not None:
            return torch.from_numpy(self.images[k])
        # On-the-fly decoding: a bad file is reported once and replaced by the next good one.
        for step in range(len(self.indices)):
            j = (k + step) % len(self.indices)
            try:
                return torch.from_numpy(np.ascontiguousarray(self._load(int(self.indices[j])).transpose(2, 0, 1)))
            except BadImage as e:
                if not self._reported[j]:
                    self._reported[j] = 1
                    print(f"skipped {e}", file=sys.stderr, flush=True)  # from a worker process, perhaps
        raise FacesynthError(f"{shown(self.path)}: no readable images left")

    @property
    def skipped(self) -> int:
        """Files skipped so far: found before training, plus those met while decoding on the fly."""
        return len(self.bad) + int(self._reported.sum())


def _is_built_dataset(meta: dict | None) -> bool:
    """A zip written by `facesynth dataset`: every file in it was decoded once already."""
    return bool(meta) and str(meta.get("format", "")).startswith("facesynth-dataset")


def box_downscale(images: torch.Tensor, resolution: int) -> torch.Tensor:
    """uint8 [N, C, R, R] -> uint8 [N, C, r, r]: each output pixel the rounded mean of an (R/r)² block."""
    factor = images.shape[-1] // resolution
    if factor <= 1:
        return images
    return F.avg_pool2d(images.float(), factor).round_().to(torch.uint8)


class EpochSampler(torch.utils.data.Sampler):
    """Endless stream of indices: a fresh seeded permutation each epoch, resumable at any position."""

    def __init__(self, size: int, seed: int, start: int = 0, rank: int = 0, world_size: int = 1):
        self.size, self.seed, self.start = size, seed, start
        self.rank, self.world_size = rank, world_size

    def __iter__(self):
        pos = self.start
        while True:
            epoch, offset = divmod(pos, self.size)
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            perm = torch.randperm(self.size, generator=g).tolist()
            for idx in perm[offset:]:
                if pos % self.world_size == self.rank:
                    yield idx
                pos += 1


def batch_iterator(dataset: ImageDataset, batch: int, seed: int, start: int = 0, workers: int | None = None,
                   resolution: int | None = None, rank: int = 0, world_size: int = 1):
    """Yields uint8 batches forever, starting ``start`` images into the seeded stream.

    ``resolution`` below the data set's serves the same images box-filtered down (progressive growing).
    With ``world_size`` data-parallel ranks, ``batch`` is this rank's share and it takes every
    ``world_size``-th image of the stream from position ``rank`` on (``start`` counts the whole stream).
    """
    resolution = resolution or dataset.resolution
    if workers is None:
        workers = 0 if dataset.images is not None else min(4, os.cpu_count() or 1)
    sampler = EpochSampler(len(dataset), seed, start, rank, world_size)
    if workers == 0 and dataset.images is not None:
        it = iter(sampler)
        images = torch.from_numpy(dataset.images_at(resolution))
        while True:
            idx = torch.tensor([next(it) for _ in range(batch)])
            yield images[idx]
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch, sampler=sampler, num_workers=workers,
                                         pin_memory=torch.cuda.is_available(), persistent_workers=workers > 0,
                                         prefetch_factor=4 if workers > 0 else None)
    for images in loader:
        yield box_downscale(images, resolution)
