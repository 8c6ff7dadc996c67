"""Generation speed of a model on this machine: latency of one face and throughput in batches.

Latency is the wall time of one seed -> image call (mapping + synthesis, batch 1), median over
repeats after warm-up; throughput is images per second at each batch size.  Default: the model
that ships with facesynth.  Writes results/generate_speed.json and results/generate_speed.md.

    python benchmarks/generate_speed.py [--ckpt RUN] [--batches 1,8,64] [--repeats 20]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from report import environment, write_results

from facesynth.checkpoints import load_generator
from facesynth.models import default_model
from facesynth.nets import parameter_counts
from facesynth.synthesis.generate import seed_latents

HERE = Path(__file__).resolve().parent


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def time_batch(G, batch: int, repeats: int, device: torch.device, psi: float) -> list[float]:
    z = seed_latents(list(range(batch)), G.z_dim).to(device)
    for _ in range(3):  # warm-up: allocator, kernel selection
        G(z, psi, noise_mode="const")
    _sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        G(z, psi, noise_mode="const")
        _sync(device)
        times.append(time.perf_counter() - t0)
    return times


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", default=None, help="model (default: the bundled one)")
    ap.add_argument("--batches", default="1,8,64")
    ap.add_argument("--repeats", type=int, default=20, help="timed calls per batch size (fewer for big batches)")
    ap.add_argument("--trunc", type=float, default=0.7)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default=str(HERE / "results"))
    ap.add_argument("--name", default="generate_speed")
    args = ap.parse_args()
    path = args.ckpt or default_model()
    if path is None:
        raise SystemExit("no --ckpt and no bundled model")
    device = torch.device(args.device)
    G = load_generator(path, device)
    results = []
    for batch in (int(b) for b in args.batches.split(",")):
        repeats = max(3, args.repeats * 8 // max(8, batch))
        times = time_batch(G, batch, repeats, device, args.trunc)
        med = statistics.median(times)
        r = {"batch": batch, "repeats": repeats, "median_s": med, "min_s": min(times), "img_per_s": batch / med}
        print(f"batch {batch}: {med * 1000:.1f} ms/call, {r['img_per_s']:.1f} img/s", file=sys.stderr)
        results.append(r)
    cfg = G.cfg
    env = environment(device)
    model = {"path": str(path), "preset": cfg.name, "resolution": cfg.resolution,
             "G_params": parameter_counts(cfg)["G"]}
    lines = [f"Generation speed of {Path(model['path']).name} ({cfg.name}, {cfg.resolution}², "
             f"G {model['G_params'] / 1e6:.2f}M), {env['device']}, {env['threads']} threads, torch {env['torch']}, "
             f"{env['time']}", "",
             "| batch | ms per call (median) | ms per face | faces/s |", "|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['batch']} | {r['median_s'] * 1000:.1f} | {r['median_s'] * 1000 / r['batch']:.2f} | "
                     f"{r['img_per_s']:.1f} |")
    write_results(args.out, args.name, {"env": env, "model": model, "results": results}, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
