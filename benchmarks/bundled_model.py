"""Face models side by side on the held-out split: FID5k, KID5k, SWD and fd_dlib5k of each (5,000 images, ψ = 1,
random noise, the same seeds), measured in one run, and the same seeds' faces at ψ = 0.7 in one figure. Made to
decide whether a candidate replaces the bundled model, which it must beat on every measure.

    python benchmarks/heldout_split.py --out runs/data --resolution 64
    python benchmarks/bundled_model.py --heldout runs/data/utk64-heldout.zip \\
        --model "before=runs/utkface-64-before.safetensors" --model "candidate=runs/long64"
    -> benchmarks/results/bundled_model.{json,md,png}

Generated images' features are cached per model file (facesynth's metrics cache), so measuring the same file
again is quick.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from recipe_comparison import METRICS, faces, measure, metric_columns
from report import environment, write_results

from facesynth.util.grid import label_rows, make_grid, save_png

HERE = Path(__file__).resolve().parent


def parse_model(text: str) -> tuple[str, Path]:
    label, sep, path = text.partition("=")
    if not sep or not label or not path:
        raise argparse.ArgumentTypeError(f"--model wants LABEL=PATH, got {text!r}")
    if not Path(path).exists():
        raise argparse.ArgumentTypeError(f"--model {label}: {path} does not exist")
    return label, Path(path)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--heldout", required=True, help="held-out images, never trained on (a dataset zip)")
    ap.add_argument("--model", type=parse_model, action="append", required=True,
                    help="LABEL=PATH of a model file, run or snapshot; repeat, first the one to beat")
    ap.add_argument("--metrics", default=METRICS)
    ap.add_argument("--psi", type=float, default=0.7, help="truncation of the figure's faces (metrics: always 1)")
    ap.add_argument("--faces", type=int, default=16, help="faces a row in the figure")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--results", default=str(HERE / "results"))
    ap.add_argument("--name", default="bundled_model")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    rows = [{"model": label, "path": str(path), "metrics": measure(path, args.heldout, args.metrics)}
            for label, path in args.model]
    shown, keys = metric_columns(args.metrics)
    lines = ["| model | " + " | ".join(shown) + " |", "|---" * (1 + len(shown)) + "|"]
    for r in rows:
        lines.append(f"| {r['model']} | " + " | ".join(f"{r['metrics'].get(k, float('nan')):.4g}" for k in keys)
                     + " |")
    first = rows[0]["metrics"]
    for r in rows[1:]:
        r["beats_first_on_every_measure"] = all(r["metrics"][k] < first[k] for k in keys)
    images = [faces(path, args.faces, args.psi) for _, path in args.model]
    grid = make_grid(torch.cat(images), cols=args.faces, upscale=2)
    save_png(label_rows(grid, [label for label, _ in args.model], grid.shape[0] // len(images)),
             Path(args.results) / f"{args.name}.png")
    write_results(args.results, args.name, {"environment": environment(), "heldout": args.heldout,
                                            "psi_of_figure": args.psi, "models": rows}, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
