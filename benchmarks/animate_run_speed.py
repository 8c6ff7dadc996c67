"""End-to-end speed of `facesynth animate run`: a photo animated by a driving clip, frames per second.

Everything a user waits for: finding the face in the photo, decoding the driver, tracking its landmarks
(dlib), loading the model, retargeting, rendering (one frame per generator call: batch 1, as live use
would), writing the video; and the rate without the start-up (what a long clip converges to).  Default: the bundled talking head, a shared portrait and clip.
Writes results/animate_run_speed.{json,md}.

    python benchmarks/animate_run_speed.py [--ckpt MODEL] [--source photo.jpg] [--driver clip.mp4] [--frames 150]
"""

from __future__ import annotations

import argparse
import os
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
    ap.add_argument("--driver", default=str(TALKING / "more-videos" / "EDTalk-mouth_source.mp4"))  # held out
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
    per_frame = report["tracking_s"] + report["render_s"]  # what grows with the clip's length
    result = {"model": str(ckpt), "config": cfg.name, "resolution": cfg.resolution, "batch": args.batch,
              "frames": frames, "total_s": total, "fps_end_to_end": frames / total,
              "fps_per_frame_work": frames / per_frame, "startup_s": total - per_frame,
              "tracking_s": report["tracking_s"], "render_s": report["render_s"],
              "render_fps": report["render_fps"], "source": Path(args.source).name, "driver": Path(args.driver).name}
    print(f"{cfg.name}: {frames} frames in {total:.1f} s = {result['fps_end_to_end']:.1f} fps end to end, "
          f"{result['fps_per_frame_work']:.1f} fps without the start-up (tracking {report['tracking_s']:.1f} s, "
          f"rendering {report['render_fps']:.1f} fps)", file=sys.stderr)
    # Other work on a shared machine slows every number here: the load average says how busy it was.
    env = environment(torch.device("cpu"), load_average=[round(x, 2) for x in os.getloadavg()])
    lines = [f"`animate run` end to end, {env['device']}, {env['threads']} thread(s), torch {env['torch']}, load "
             f"average {env['load_average'][0]} on {env['cpus']} CPUs, {env['time']}", "",
             "| model | resolution | batch | frames | total s (with start-up) | fps end to end | fps without start-up "
             "| tracking s | rendering fps (with writing) |",
             "|---|---|---|---|---|---|---|---|---|",
             f"| {cfg.name} | {cfg.resolution}² | {args.batch} | {frames} | {total:.1f} | "
             f"{result['fps_end_to_end']:.1f} | {result['fps_per_frame_work']:.1f} | {report['tracking_s']:.1f} | "
             f"{report['render_fps']:.1f} |"]
    write_results(args.out, args.name, {"env": env, "results": [result]}, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
