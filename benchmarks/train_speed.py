"""Training throughput (img/s) of facesynth presets on this machine.

Times full training steps (G main, D main, and the lazy R1 step at its real
frequency) after warm-up, on real faces when ../shared is present.  Writes
results/train_speed.json and results/train_speed.md.  Also times the two forms
of the modulated convolution side by side (ratio), which decides the default.

    python benchmarks/train_speed.py [--presets stylegan2-64-cpu,stylegan2-32-cpu] [--steps 32]

A progressively grown preset is timed at one stage with NAME@RES (e.g. progan-64@32: the stable
32x32 phase, with that phase's batch size); without @RES, at its final resolution.
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from report import environment, write_results

from facesynth.data.build import build_dataset
from facesynth.data.loader import batch_iterator
from facesynth.nets import layers, parameter_counts
from facesynth.presets import get_preset
from facesynth.training.loop import Trainer, TrainOptions

HERE = Path(__file__).resolve().parent
UTKFACE = HERE.parents[1] / "shared" / "data" / "faces" / "utkface-200.zip"


def make_data(res: int, tmp: Path) -> tuple[Path, str]:
    dest = tmp / f"faces{res}.zip"
    if UTKFACE.is_file():
        build_dataset(UTKFACE, dest, res, max_images=512, quiet=True)
        return dest, "UTKFace (512 images)"
    arr = np.random.default_rng(0).integers(0, 255, (256, res, res, 3), dtype=np.uint8)
    np.save(tmp / "noise.npy", arr)
    build_dataset(tmp / "noise.npy", dest, res, quiet=True)
    return dest, "random pixels (../shared absent)"


def time_preset(spec: str, steps: int, tmp: Path, grouped: bool | None = None, data: Path | None = None,
                count=None, **options) -> dict:
    """img/s of ``spec`` (a preset name or config .json, optionally @RES); ``data``: the images to train on
    (default: 512 UTKFace faces, or random pixels without ../shared).  ``count(run_one_step)``, if given, is
    called after timing and its value returned as "counted" (e.g. the FLOPs of one more step).  ``options``
    go to TrainOptions (e.g. compile=True, precision="fp32"); the settings they resolve to are returned as
    "performance", and on a GPU the peak memory of the timed steps as "peak_memory_mb"."""
    name, _, stage = spec.partition("@")
    cfg = get_preset(name)
    res = int(stage) if stage else cfg.resolution
    if data is None:
        data, data_desc = make_data(cfg.resolution, tmp)
    else:
        data_desc = str(data)
    out = tmp / f"run-{spec}-{grouped}"
    if torch.cuda.is_available():  # the peak memory measured below should be this run's alone
        gc.collect()
        torch.cuda.empty_cache()
    trainer = Trainer(TrainOptions(data=str(data), out=str(out), preset=name, kimg=1e6, quiet=True,
                                   tensorboard=False, **options))
    cuda = trainer.device.type == "cuda"
    stable = [p for p in trainer.schedule.phases if p.resolution == res and p.kind == "stable"]
    if not stable:
        raise SystemExit(f"{name} never trains at {res}x{res}")
    trainer._set_growth(trainer.schedule.at(stable[0].start))
    batch = trainer.growth.batch
    batches = batch_iterator(trainer.dataset, batch, 0, resolution=res)
    original = layers.MODCONV_FORM
    if grouped is not None:  # force one form of the modulated convolution for the comparison
        layers.MODCONV_FORM = "grouped" if grouped else "shared"
    try:
        for _ in range(2):  # warm-up: allocator, oneDNN/cuDNN kernel selection, compilation
            trainer.train_step(next(batches))
        if cuda:
            torch.cuda.synchronize(trainer.device)
            torch.cuda.reset_peak_memory_stats(trainer.device)
        # Any window of a multiple of r1_interval steps holds its fair share of lazy R1 steps.
        t0 = time.perf_counter()
        for _ in range(steps):
            trainer.train_step(next(batches))
        if cuda:
            torch.cuda.synchronize(trainer.device)
        dt = time.perf_counter() - t0
        peak_memory_mb = torch.cuda.max_memory_allocated(trainer.device) / 2**20 if cuda else None
        counted = count(lambda: trainer.train_step(next(batches))) if count else None
    finally:
        layers.MODCONV_FORM = original
    counts = parameter_counts(cfg)
    return {"preset": name, "resolution": res, "batch": batch, "G_params": counts["G"],
            "D_params": counts["D"], "steps": steps, "seconds": dt, "img_per_s": steps * batch / dt,
            "data": data_desc, "modconv": {None: "default", True: "grouped", False: "shared"}[grouped],
            "counted": counted, "performance": trainer.perf.to_dict(), "peak_memory_mb": peak_memory_mb}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", default="stylegan2-64-cpu,stylegan2-32-cpu")
    ap.add_argument("--steps", type=int, default=32, help="timed steps per preset (a multiple of 16 is fair to R1)")
    ap.add_argument("--compare-modconv", action="store_true",
                    help="also time the shared and grouped modulated conv (16 steps each; grouped is slow on CPUs)")
    ap.add_argument("--out", default=str(HERE / "results"))
    ap.add_argument("--name", default="train_speed", help="output file stem")
    args = ap.parse_args()
    torch.manual_seed(0)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.presets.split(","):
            r = time_preset(name, args.steps, Path(tmp))
            print(f"{name}: {r['img_per_s']:.2f} img/s (G {r['G_params'] / 1e6:.2f}M)", file=sys.stderr)
            results.append(r)
            if args.compare_modconv:
                for grouped in (False, True):
                    r2 = time_preset(name, 16, Path(tmp), grouped=grouped)
                    print(f"  modconv {r2['modconv']}: {r2['img_per_s']:.2f} img/s", file=sys.stderr)
                    results.append(r2)
    env = environment()
    lines = [f"Training throughput, {env['device']}, {env['cpus']} CPUs, torch {env['torch']}, {env['time']}", "",
             "| preset | res | batch | G params | D params | modconv | img/s |", "|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['preset']} | {r['resolution']}² | {r['batch']} | {r['G_params'] / 1e6:.2f}M | "
                     f"{r['D_params'] / 1e6:.2f}M | {r['modconv']} | {r['img_per_s']:.2f} |")
    write_results(args.out, args.name, {"env": env, "results": results}, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
