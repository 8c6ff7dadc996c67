"""Every command on an imported StyleGAN2 config-F model (1024², G 30M parameters), on this machine.

A checkpoint in rosinality's layout with random weights at config F's shapes (`random_checkpoint(1024, 512, 8,
2)`: FFHQ's network, untrained) is imported with `facesynth import --what all`; then each command a user of
NVIDIA's ffhq.pkl would run is run as that user would, and its wall time and exit status recorded, with the
seconds per face of `generate` (batch 1, median after warm-up).  Writes results/imported_1024.json and .md.

    python benchmarks/imported_1024.py [--data ../shared/data/faces/utkface-200.zip] [--photo PORTRAIT.jpg]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import torch
from report import environment, write_results

from facesynth.checkpoints import load_generator
from facesynth.importers.rosinality import random_checkpoint
from facesynth.synthesis.generate import seed_latents

HERE = Path(__file__).resolve().parent
SHARED = HERE.parents[1] / "shared"


def facesynth(*args: str, cwd: Path, timeout: int = 3600) -> dict:
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "facesynth", *args], cwd=cwd, capture_output=True, text=True,
                       timeout=timeout, env={**os.environ, "FACESYNTH_DEVICE": "cpu"})
    row = {"command": "facesynth " + " ".join(args), "seconds": time.perf_counter() - t0, "rc": r.returncode}
    if r.returncode:
        row["error"] = r.stderr.strip().splitlines()[-1:] if r.stderr.strip() else []
    print(f"{row['rc']} {row['seconds']:7.1f} s  {row['command']}", file=sys.stderr, flush=True)
    return row


@torch.no_grad()
def seconds_per_face(model: Path, repeats: int = 5) -> dict:
    G = load_generator(model)
    z = seed_latents(list(range(repeats + 1)), G.z_dim)
    G(z[:1], 0.7, noise_mode="const")  # warm-up
    times = []
    for i in range(1, repeats + 1):
        t0 = time.perf_counter()
        G(z[i:i + 1], 0.7, noise_mode="const")
        times.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(times), "min_s": min(times), "repeats": repeats,
            "G_params": sum(p.numel() for p in G.parameters())}


def serve_check(model: Path, cwd: Path, port: int = 8765) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "facesynth", "serve", "--ckpt", str(model), "--port", str(port)],
                            cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "FACESYNTH_DEVICE": "cpu"})
    row = {"command": f"facesynth serve --ckpt {model.name} (GET /api/face?seed=1)", "rc": 1}
    try:
        for _ in range(600):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/face?seed=1&psi=0.7", timeout=600) as r:
                    body = r.read()
                row["rc"] = 0 if body[:8] == b"\x89PNG\r\n\x1a\n" else 1
                row["png_bytes"] = len(body)
                break
            except OSError:
                if proc.poll() is not None:
                    row["error"] = proc.stderr.read().strip().splitlines()[-1:]
                    break
                time.sleep(1)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
    row["seconds"] = time.perf_counter() - t0
    print(f"{row['rc']} {row['seconds']:7.1f} s  {row['command']}", file=sys.stderr, flush=True)
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(SHARED / "data" / "faces" / "utkface-200.zip"))
    ap.add_argument("--photo", default=str(SHARED / "data" / "talking" / "portraits" / "s0.jpg"))
    ap.add_argument("--out", default=str(HERE / "results"))
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        src = work / "config-f.pt"
        torch.save(random_checkpoint(1024, 512, 8, 2), src)
        rows.append(facesynth("import", str(src), "--out", "F.safetensors", "--what", "all", cwd=work))
        model = work / "F.safetensors"
        speed = seconds_per_face(model)
        print(f"generate: {speed['median_s']:.2f} s per face (batch 1)", file=sys.stderr)
        ck = ["--ckpt", "F.safetensors"]
        rows.append(facesynth("generate", *ck, "--seeds", "0-3", "--trunc", "0.7", "--out", "faces.png", cwd=work))
        rows.append(facesynth("mix", *ck, "--rows", "1-2", "--cols", "3-4", "--out", "mix.png", cwd=work))
        rows.append(facesynth("noise", *ck, "--seed", "5", "--draws", "4", "--out", "noise", cwd=work))
        rows.append(facesynth("interpolate", *ck, "--seeds", "1,2", "--seconds", "1", "--fps", "4", "--size", "256",
                              "--out", "walk.mp4", "--quiet", cwd=work))
        rows.append(facesynth("project", *ck, "--target", args.photo, "--out", "proj", "--steps", "10", "--no-video",
                              "--quiet", cwd=work))
        rows.append(facesynth("mix", *ck, "--rows", "proj/latent.npz,3", "--cols", "4", "--out", "mix-real.png",
                              cwd=work))
        rows.append(facesynth("metrics", *ck, "--data", args.data, "--metrics", "kid32,ppl_w16", "--batch", "4",
                              "--quiet", cwd=work))
        rows.append(facesynth("export", *ck, "--out", "F-fp16.safetensors", "--fp16", cwd=work))
        rows.append(serve_check(model, work))
        rows.append(facesynth("dataset", args.data, "faces1024.zip", "--resolution", "1024", "--max-images", "8",
                              "--quiet", cwd=work))
        rows.append(facesynth("train", "--data", "faces1024.zip", "--init-from", "F.safetensors", "--out", "ft",
                              "--kimg", "0.004", "--batch", "4", "--snap", "0.004", "--quiet", cwd=work))
    env = environment()
    lines = [f"Every command on an imported StyleGAN2 config-F model (1024², G {speed['G_params'] / 1e6:.1f}M, random "
             f"weights) on {env['device']}, {env['threads']} threads, torch {env['torch']}, {env['time']}", "",
             f"`generate`: **{speed['median_s']:.2f} s per face** (batch 1, median of {speed['repeats']}; "
             f"min {speed['min_s']:.2f} s)", "",
             "| command | exit | wall (s) |", "|---|---|---|"]
    for r in rows:
        lines.append(f"| `{r['command']}` | {r['rc']} | {r['seconds']:.1f} |")
    write_results(args.out, "imported_1024", {"env": env, "generate": speed, "commands": rows}, lines)
    return 0 if all(r["rc"] == 0 for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
