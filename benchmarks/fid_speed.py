"""Inception feature extraction speed (img/s) and the cost of computing FID from features.

Times ``extract_features`` (the path every FID/KID/PR takes: one image per forward pass on CPU, fixed
padded chunks on CUDA) on real faces when ../shared is present, and, with ``--raw-batch B``, the bare
network on batches of B for comparison.  Also times the Fréchet distance from 2048-d statistics.
Writes results/fid_speed.json and results/fid_speed.md.

    python benchmarks/fid_speed.py [--num 64] [--device cpu] [--raw-batch 16]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from report import environment, write_results

from facesynth.metrics.inception import extract_features, feature_extractor, to_network_input
from facesynth.metrics.stats import frechet_distance, mean_cov

HERE = Path(__file__).resolve().parent
UTKFACE = HERE.parents[1] / "shared" / "data" / "faces" / "utkface-200.zip"


def load_images(num: int, res: int) -> tuple[torch.Tensor, str]:
    if UTKFACE.is_file():
        from facesynth.data.loader import ImageDataset

        ds = ImageDataset(UTKFACE, res, max_images=num, quiet=True)
        return torch.from_numpy(ds.images), f"UTKFace ({num} images at {res}²)"
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (num, 3, res, res), generator=g, dtype=torch.uint8), "random pixels"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--num", type=int, default=64, help="images to extract features of")
    ap.add_argument("--res", type=int, default=64, help="image resolution fed in (the network resizes to 299)")
    ap.add_argument("--batch", type=int, default=32, help="batch size handed to extract_features")
    ap.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    ap.add_argument("--raw-batch", type=int, default=0, help="also time the bare network at this batch size")
    ap.add_argument("--out", default=str(HERE / "results"))
    args = ap.parse_args()
    ext = feature_extractor(args.device)
    device = ext.device
    images, desc = load_images(args.num, args.res)
    extract_features([images[:1]], ext, quiet=True)  # warm-up: first-call allocations and kernel choice
    sync(device)
    t0 = time.perf_counter()
    feats = extract_features(images.split(args.batch), ext, quiet=True)
    sync(device)
    dt = time.perf_counter() - t0
    results = [{"what": f"extract_features (chunk {ext.chunk})", "images": args.num, "seconds": dt,
                "img_per_s": args.num / dt}]
    print(f"extract_features: {args.num} images in {dt:.1f} s = {args.num / dt:.2f} img/s", file=sys.stderr)
    if args.raw_batch:
        x = images[:args.raw_batch].to(device)
        with torch.no_grad():
            t0 = time.perf_counter()
            ext.module(to_network_input(x)) if ext.flavour == "body" else ext.module(x, return_features=True)
            sync(device)
            rt = time.perf_counter() - t0
        results.append({"what": f"bare network, batch {len(x)}", "images": len(x), "seconds": rt,
                        "img_per_s": len(x) / rt})
        print(f"bare network at batch {len(x)}: {len(x) / rt:.2f} img/s", file=sys.stderr)
    rng = np.random.default_rng(0)
    fake = feats + rng.standard_normal(feats.shape).astype(np.float32) * 0.1
    t0 = time.perf_counter()
    (m1, s1), (m2, s2) = mean_cov(feats), mean_cov(fake)
    frechet_distance(m1, s1, m2, s2)
    results.append({"what": "Fréchet distance from 2048-d statistics (eigh)", "images": 0,
                    "seconds": time.perf_counter() - t0, "img_per_s": None})
    env = environment(device, network=str(ext.path), flavour=ext.flavour, data=desc)
    title = (f"Inception feature extraction, {env['device']}, {env['threads']} threads, torch {env['torch']}, "
             f"{env['data']}, {env['time']}")
    lines = [title, "", "| what | images | seconds | img/s |", "|---|---|---|---|"]
    for r in results:
        ips = f"{r['img_per_s']:.2f}" if r["img_per_s"] else "-"
        lines.append(f"| {r['what']} | {r['images']} | {r['seconds']:.2f} | {ips} |")
    write_results(args.out, "fid_speed", {"env": env, "results": results}, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
