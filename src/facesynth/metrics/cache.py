"""Inception features cached on disk by content: a data set's, and a checkpoint's generated images'.

Data sets (``inception-stats/``): the key is a SHA-256 of the decoded pixels actually fed to the network
(or, for data sets too large to preload, the raw bytes and names of their files plus the PIL version that
decodes them), the resolution and square mode, the number of images, and the network file's own SHA-256.
A changed image, resolution or network gives a new key, never a stale hit.

Generated images (``inception-generated/``): the key is a SHA-256 of everything that decides their pixels
and features: the model file's SHA-256 (it holds config and growth state too), seeds, count, ψ, cutoff,
noise mode, batch size (random noise is drawn per batch), generator and network devices, the network's
SHA-256, and the torch and facesynth versions.  Only checkpoint files are cached: a module in memory
(training's G_ema) has no content hash and is never evaluated twice.

Files are ``.npz`` (features float32, mu and sigma float64) written atomically and read with
``allow_pickle=False``; a file that is damaged or whose stored key differs is reported and recomputed.

Other feature networks with the extractor's interface (dlib's face descriptors, face_descriptors.py) are
cached the same way in folders of their own, ``<label>-stats/`` and ``<label>-generated/`` (``dlib-stats/``),
their keys holding that network's identity, so the namespaces never meet.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import zipfile
from pathlib import Path

import numpy as np
import PIL
import torch

from .. import __version__
from ..data.loader import ImageDataset
from ..util.atomic import atomic_path, check_writable_dir
from .inception import FEATURE_DIM, FeatureExtractor, extract_features
from .sources import dataset_batches, subset_indices
from .stats import mean_cov

ENV_VAR = "FACESYNTH_CACHE"
FORMAT = "facesynth-inception-stats-1"
GENERATED_FORMAT = "facesynth-generated-features-1"
STATS_ARRAYS = ("features", "mu", "sigma")


def cache_dir(path: str | os.PathLike | None = None) -> Path:
    """Explicit folder, then $FACESYNTH_CACHE, then ~/.cache/facesynth."""
    if path is None:
        path = os.environ.get(ENV_VAR) or Path.home() / ".cache" / "facesynth"
    return Path(path).expanduser()


def dataset_key(dataset: ImageDataset, num: int, detector: str) -> str:
    h = hashlib.sha256()
    head = {"format": FORMAT, "detector": detector, "resolution": dataset.resolution, "square": dataset.square,
            "num": num}
    chosen = subset_indices(len(dataset), num)
    if dataset.images is not None:
        h.update(json.dumps({**head, "content": "pixels"}, sort_keys=True).encode())
        h.update(np.ascontiguousarray(dataset.images[chosen]).data)
    else:  # hashing decoded pixels would mean decoding a large set twice; the files identify it as well
        h.update(json.dumps({**head, "content": "files", "pil": PIL.__version__}, sort_keys=True).encode())
        for i in dataset.indices[chosen]:
            payload = dataset.source.read(int(i))
            data = payload.tobytes() if isinstance(payload, np.ndarray) else payload
            name = dataset.source.names[int(i)].encode()
            h.update(len(name).to_bytes(8, "little") + name + len(data).to_bytes(8, "little"))
            h.update(data)
    return h.hexdigest()


_SHAPES = {"features": lambda n, d: (n, d), "mu": lambda n, d: (d,), "sigma": lambda n, d: (d, d)}


def _read(path: Path, key: str, num: int, arrays: tuple[str, ...] = STATS_ARRAYS,
          dim: int = FEATURE_DIM) -> dict | None:
    """The cached ``arrays`` when the file is readable, has this exact key and the expected shapes; else None."""
    try:
        with np.load(path, allow_pickle=False) as z:
            got = {k: z[k] for k in ("key", *arrays)}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        print(f"{path}: damaged statistics cache ({type(e).__name__}); recomputing", file=sys.stderr)
        return None
    ok = str(got["key"]) == key and all(got[k].shape == _SHAPES[k](num, dim) and got[k].dtype.kind == "f"
                                        for k in arrays)
    if not ok:
        print(f"{path}: statistics cache does not match its name; recomputing", file=sys.stderr)
        return None
    return got


def _write(path: Path, key: str, **arrays: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, key=np.array(key), **arrays)


def generated_key(model_sha256: str, num: int, settings: dict, detector: str) -> str:
    """Key of a checkpoint's generated features; ``settings``: seed, ψ, cutoff, noise mode, batch, devices."""
    head = {"format": GENERATED_FORMAT, "model": model_sha256, "num": num, "detector": detector,
            "torch": torch.__version__, "facesynth": __version__, **settings}
    return hashlib.sha256(json.dumps(head, sort_keys=True).encode()).hexdigest()


def generated_features(model_file: Path, key: str, num: int, compute, cache: str | os.PathLike | None = None,
                       quiet: bool = False, label: str = "inception", dim: int = FEATURE_DIM) -> np.ndarray:
    """Features [num, dim] of a checkpoint's generated images: from the cache under ``key``, else
    ``compute()`` and stored; ``label`` and ``dim`` are the feature network's (Inception by default)."""
    folder = check_writable_dir(cache_dir(cache) / f"{label}-generated")  # fail before the long part
    path = folder / f"{model_file.stem}-{num}-{key[:16]}.npz"
    if path.is_file():
        got = _read(path, key, num, ("features",), dim)
        if got is not None:
            if not quiet:
                print(f"using cached generated-image features {path}", file=sys.stderr)
            return got["features"]
    feats = compute()
    _write(path, key, features=feats)
    return feats


def dataset_features(dataset: ImageDataset, num: int | None, extractor: FeatureExtractor, batch: int = 64,
                     cache: str | os.PathLike | None = None, use_cache: bool = True,
                     quiet: bool = False) -> dict:
    """{"features", "mu", "sigma", "path"} for ``num`` images (``subset_indices``), from the cache when possible.

    ``extractor``: the Inception FeatureExtractor or another network with its interface (label, dim, identity)."""
    n = len(dataset) if num is None else min(num, len(dataset))
    key = dataset_key(dataset, n, extractor.identity)
    path = None
    if use_cache:
        folder = check_writable_dir(cache_dir(cache) / f"{extractor.label}-stats")  # fail before the long part
        path = folder / f"{dataset.path.stem}-{dataset.resolution}px-{n}-{key[:16]}.npz"
        if path.is_file():
            got = _read(path, key, n, dim=extractor.dim)
            if got is not None:
                if not quiet:
                    print(f"using cached data-set statistics {path}", file=sys.stderr)
                return {"features": got["features"], "mu": got["mu"], "sigma": got["sigma"], "path": path}
    feats = extract_features(dataset_batches(dataset, batch, n), extractor, total=n,
                             desc=f"{extractor.label} {dataset.path.name}", quiet=quiet)
    mu, sigma = mean_cov(feats)
    if path is not None:
        _write(path, key, features=feats, mu=mu, sigma=sigma)
    return {"features": feats, "mu": mu, "sigma": sigma, "path": path}
