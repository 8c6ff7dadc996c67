"""End-to-end speed of `facesynth animate run`: a photo animated by a driving clip, frames per second.

Everything a user waits for after the model is loaded: decoding the driver, tracking its landmarks (dlib),
retargeting, rendering (one frame per generator call: batch 1, as live use would), writing the video.
Also the generator's time alone.  Default: the bundled talking head, a shared portrait and clip.
Writes results/animate_run_speed.{json,md}.

    python benchmarks/animate_run_speed.py [--ckpt MODEL] [--source photo.jpg] [--driver clip.mp4] [--frames 150]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
from report import environment, write_results

from facesynth.animate.reenact import reenact, talking_checkpoint, talking_config

HERE = Path(__file__).resolve().parent
TALKING = HERE.parents[1] / "shared" / "data" / "talking"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", default=None, help="talking-head model (default: the bundled one)")
    ap.add_argument("--source", default=str(TALKING / "portraits" / "s1.jpg"))
    ap.add_argument("--driver", default=str(TALKING / "videos" / "liveport-d0.mp4"))
    ap.add_argument("--frames", type=int, default=150)
    ap.add_argument("--batch", type=int, default=1, help="frames per generator call")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(HERE / "results"))
    ap.add_argument("--name", default="animate_run_speed")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ckpt = talking_checkpoint(args.ckpt)
    cfg = talking_config(ckpt)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        report = reenact(ckpt, args.driver, str(Path(tmp) / "out.mp4"), sources=[args.source],
                         max_frames=args.frames, quiet=True, render_batch=args.batch)
        total = time.perf_counter() - t0
    frames = report["frames"]
    result = {"model": str(ckpt), "config": cfg.name, "resolution": cfg.resolution, "batch": args.batch,
              "frames": frames, "total_s": total, "fps_end_to_end": frames / total,
              "tracking_s": report["tracking_s"], "render_s": report["render_s"],
              "render_fps": report["render_fps"], "source": Path(args.source).name, "driver": Path(args.driver).name}
    print(f"{cfg.name}: {frames} frames in {total:.1f} s = {result['fps_end_to_end']:.1f} fps end to end "
          f"(tracking {report['tracking_s']:.1f} s, rendering {report['render_fps']:.1f} fps)", file=sys.stderr)
    env = environment(torch.device("cpu"))
    lines = [f"`animate run` end to end (load excluded), {env['device']}, {env['threads']} thread(s), torch "
             f"{env['torch']}, {env['time']}", "",
             "| model | resolution | batch | frames | total s | fps end to end | tracking s | rendering fps |",
             "|---|---|---|---|---|---|---|---|",
             f"| {cfg.name} | {cfg.resolution}² | {args.batch} | {frames} | {total:.1f} | "
             f"{result['fps_end_to_end']:.1f} | {report['tracking_s']:.1f} | {report['render_fps']:.1f} |"]
    write_results(args.out, args.name, {"env": env, "results": [result]}, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
