"""Reenactment speed: talking-head frames per second, landmarks in, frames out.

Times the part that runs per frame once a person is embedded (or fine-tuned): drawing the
landmark image and the generator's forward pass, at batch 1 (live use: one frame as it
arrives) and in batches (offline video).  Per preset, with random weights unless --ckpt is
given (speed does not depend on the weights).  Writes results/reenact_speed.{json,md}.

    python benchmarks/reenact_speed.py [--presets talking-64-cpu,talking-256-paper] [--batches 1,16] [--device cuda]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from report import environment, write_results

from facesynth.animate.config import get_preset
from facesynth.animate.episodes import landmark_image, to_unit
from facesynth.animate.model import load_run
from facesynth.nets.talking_head import TalkingHeadGenerator, parameter_count

HERE = Path(__file__).resolve().parent


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def face_landmarks(resolution: int, n: int, seed: int = 0) -> np.ndarray:
    """n landmark sets of a face filling the middle of the frame, jittered (drawing cost is what matters)."""
    rng = np.random.default_rng(seed)
    a = np.linspace(0, 2 * np.pi, 68, endpoint=False)
    base = np.stack([0.5 + 0.2 * np.cos(a), 0.5 + 0.25 * np.sin(a)], 1) * resolution
    return base[None] + rng.normal(0, resolution / 200, (n, 68, 2))


@torch.no_grad()
def time_frames(G, psi: torch.Tensor, resolution: int, batch: int, repeats: int, device: torch.device,
                half: bool) -> list[float]:
    lms = face_landmarks(resolution, batch)
    times = []
    for i in range(repeats + 3):  # 3 warm-up calls
        t0 = time.perf_counter()
        drawings = np.stack([landmark_image(lm, resolution, resolution) for lm in lms])
        x = to_unit(torch.from_numpy(drawings).permute(0, 3, 1, 2)).to(device)
        with torch.autocast(device.type, dtype=torch.float16 if device.type == "cuda" else torch.bfloat16,
                            enabled=half):
            out = G(x, psi.expand(batch, -1))
        ((out.float().clamp(-1, 1) + 1) * 127.5).to(torch.uint8).cpu()
        _sync(device)
        if i >= 3:
            times.append(time.perf_counter() - t0)
    return times


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", default="talking-64-cpu,talking-128,talking-256-paper")
    ap.add_argument("--ckpt", default=None, help="a meta-trained run to time instead of the presets")
    ap.add_argument("--batches", default="1,16")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--half", action="store_true", help="autocast (fp16 on CUDA, bf16 on CPU)")
    ap.add_argument("--out", default=str(HERE / "results"))
    ap.add_argument("--name", default="reenact_speed")
    args = ap.parse_args()
    device = torch.device(args.device)
    models = []
    if args.ckpt:
        cfg, nets, _ = load_run(args.ckpt, device)
        models.append((cfg, nets["G"]))
    else:
        for name in args.presets.split(","):
            cfg = get_preset(name)
            models.append((cfg, TalkingHeadGenerator(cfg).to(device).eval()))
    results = []
    for cfg, G in models:
        psi = torch.randn(1, G.psi_dim, device=device) * 0.1
        for batch in (int(b) for b in args.batches.split(",")):
            times = time_frames(G, psi, cfg.resolution, batch, args.repeats, device, args.half)
            med = statistics.median(times)
            r = {"preset": cfg.name, "resolution": cfg.resolution, "G_params": parameter_count(G), "batch": batch,
                 "median_s": med, "fps": batch / med}
            print(f"{cfg.name} batch {batch}: {med * 1000:.1f} ms, {r['fps']:.1f} fps", file=sys.stderr)
            results.append(r)
    env = environment(device)
    lines = [f"Talking-head reenactment speed (landmark drawing + G), {env['device']}, {env['threads']} threads, "
             f"torch {env['torch']}{', autocast' if args.half else ''}, {env['time']}", "",
             "| preset | resolution | G params | batch | ms per call | frames/s |", "|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['preset']} | {r['resolution']}² | {r['G_params'] / 1e6:.1f}M | {r['batch']} | "
                     f"{r['median_s'] * 1000:.1f} | {r['fps']:.1f} |")
    write_results(args.out, args.name, {"env": env, "results": results, "half": args.half}, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
