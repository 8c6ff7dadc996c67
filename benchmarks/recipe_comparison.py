"""Training recipes at equal wall clock: each recipe trains, one after another on an otherwise idle machine, for
the given minutes (e.g. 60 and then on to 180), and each checkpoint is measured against a held-out set it never
trained on (FID, KID, SWD and the Fréchet distance on dlib's face descriptors); a labelled grid of the same
seeds puts the recipes side by side.

    python benchmarks/heldout_split.py --out runs/data --resolution 64
    python benchmarks/recipe_comparison.py --data runs/data/utk64-train.zip --heldout runs/data/utk64-heldout.zip \\
        --minutes 60,180 --out runs/compare [--recipes stylegan2,stylegan2-da,projected+native]
    -> runs/compare/<recipe>/ (the runs), results/recipe_comparison.{json,md}, results/recipe_comparison.png

For transfer learning on a small set, compare ``stylegan2-da`` (from scratch) with the ``finetune-*`` recipes,
e.g. on ``heldout_split.py --min-age 70``'s faces aged 70 and over.  They start from ``--start-from`` (default:
the bundled model): ``finetune-da`` with the starting file's D, or a fresh one where the file holds none,
``finetune-da-warmup`` the same with D trained alone for its first kimg (``finetune-warmup``: without DiffAugment,
D alone for 4 kimg, to continue a large set's model), ``freezed-da`` with the first two D blocks kept (FreezeD:
start from a file that holds D, a run's snapshot or the bundled model).  The transfer table in
``results/`` (transfer_70plus) started from the bundled model of that day, which held no D:
``git show ad7acfd^:src/facesynth/models/utkface-64.safetensors > then.safetensors``, ``--start-from then.safetensors``.
``finetune-projected`` puts the trained generator against a fresh projected
discriminator (D alone for the first kimg): a candidate for a better bundled model.  ``--name`` keeps such a
table apart from the recipe comparison's.

Training resumes exactly, so a recipe's 180-minute checkpoint is its 60-minute run continued; an interrupted
comparison continues where it stopped (finished checkpoints are kept in the JSON and not measured again).

``--budget speed`` spends the same compute without needing the machine to itself for the whole comparison:
first each recipe's training throughput is timed, one after another on the idle machine (img/s, kept in the
JSON), then each trains to minutes x 60 x its img/s images, however long that takes.  The comparison can then
run at low priority beside other work, paused and resumed, and still give each recipe what the given minutes
of the idle machine would have.  Timed at ``--threads 1``, two comparisons of different recipes can share one
``--out``, one per core; a last call naming all of them writes the joint table.  ``--speed NAME=IMG_S`` puts a
throughput in place of the timed one: to line a recipe up with a table made earlier on a faster-running machine,
time it beside that table's recipe and scale by the ratio.  A run that has already trained beyond a mark (a
long run measured afterwards) is measured at its last kept checkpoint before the mark.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import subprocess
import sys
import time
from pathlib import Path

import torch
from report import environment, write_results

from facesynth.checkpoints import load_generator, resolve_checkpoint
from facesynth.metrics.registry import compute_metrics
from facesynth.models import DEFAULT_MODEL
from facesynth.training.snapshots import HISTORY_DIR, history_path, snapshot_name
from facesynth.util.atomic import write_json_atomic
from facesynth.util.grid import label_rows, make_grid, save_png

HERE = Path(__file__).resolve().parent
LITE = ["--preset", "stylegan2-64-lite", "--set", "progressive=false"]
PROJECTED = ["--preset", "projected-64-cpu"]
# The same generator (stylegan2-64-lite's, ~3M parameters) in every recipe; only what it learns against changes.
RECIPES = {
    "stylegan2": LITE,
    "stylegan2-da": LITE + ["--diffaugment", "color,translation,cutout"],
    "stylegan2-ada": LITE + ["--ada-target", "0.6"],
    "projected": PROJECTED,
    "projected+native": PROJECTED + ["--set", 'discriminator="projected+native"', "--set", "r1_gamma=0.025",
                                     "--set", "r1_interval=16"],
    "projected+native-f128": PROJECTED + ["--set", 'discriminator="projected+native"', "--set", "r1_gamma=0.025",
                                          "--set", "r1_interval=16", "--set", "projected_resolution=128"],
    # Transfer on a small set, from --start-from ("{start}").
    "finetune-da": LITE + ["--diffaugment", "color,translation,cutout", "--init-from", "{start}"],
    "finetune-da-warmup": LITE + ["--diffaugment", "color,translation,cutout", "--init-from", "{start}",
                                  "--set", "d_warmup_kimg=1"],
    "freezed-da": LITE + ["--diffaugment", "color,translation,cutout", "--init-from", "{start}", "--freeze-d", "2"],
    # Longer training of a model (of a file without D: D alone for its first 4 kimg).
    "finetune-warmup": LITE + ["--init-from", "{start}", "--set", "d_warmup_kimg=4"],
    # The trained generator against a fresh projected D, which first learns alone for 1 kimg.
    "finetune-projected": PROJECTED + ["--init-from", "{start}", "--set", "d_warmup_kimg=1"],
}
START = "start"  # not a recipe: --start-from itself, measured as it is
METRICS = "fid5k,kid5k,swd,fd_dlib5k"


def train_until(run: Path, recipe: list[str], data: str, minutes: float | None, threads: int | None,
                kimg: float = 1e6) -> Path:
    """Train (or continue) ``run`` for ``minutes`` more of wall clock (None: no limit) or up to ``kimg`` thousand
    images; returns its latest snapshot.  A run already past ``kimg`` (a longer run measured at an earlier mark)
    is not trained: its last checkpoint at or before ``kimg`` is returned, from the history training keeps."""
    earlier = checkpoint_before(run, kimg)
    if earlier is not None:
        return earlier
    cmd = [sys.executable, "-m", "facesynth", "train", "--data", data, "--out", str(run), "--kimg", f"{kimg:g}",
           "--quiet"]
    if minutes is not None:
        cmd += ["--minutes", str(minutes)]
    if (run / "latest.json").is_file():
        cmd += ["--resume", "auto"]  # the snapshot carries the recipe
    else:
        cmd += recipe
    if threads:
        cmd += ["--threads", str(threads)]
    subprocess.run(cmd, check=True)
    return run / json.loads((run / "latest.json").read_text())["snapshot"]


def checkpoint_before(run: Path, kimg: float) -> Path | None:
    """The snapshot path (pruned or not: see kept_generator) of ``run``'s last G_ema at or before ``kimg``, when
    the run has trained beyond it; None when it has not."""
    latest = run / "latest.json"
    if not latest.is_file() or json.loads(latest.read_text())["images_seen"] <= kimg * 1000:
        return None
    seen = sorted(int(p.stem.removeprefix("G_ema-")) for p in (run / HISTORY_DIR).glob("G_ema-*.safetensors"))
    before = [n for n in seen if n <= kimg * 1000]
    if not before:
        raise SystemExit(f"{run} has trained beyond {kimg:g} kimg and keeps no checkpoint before it")
    return run / snapshot_name(before[-1])


def snapshot_kimg(snapshot: Path) -> float:
    """Thousands of images a snapshot had seen, also once training has pruned it (its name says)."""
    return int(snapshot.name.removeprefix("snapshot-")) / 1000


def record(state_file: Path, key: str, value) -> dict:
    """Store one finished entry and return the whole state.  Several comparisons may share ``state_file`` (e.g.
    one per core with ``--budget speed``): each re-reads it under a lock and adds only its own entry."""
    state_file.parent.mkdir(parents=True, exist_ok=True)
    with open(state_file.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        state = json.loads(state_file.read_text()) if state_file.is_file() else {}
        if isinstance(value, dict) and isinstance(state.get(key), dict):
            state[key].update(value)
        else:
            state[key] = value
        write_json_atomic(state_file, state)
    return state


def training_speed(recipe: list[str], data: str, threads: int | None, kimg: float = 0.96) -> float:
    """img/s of a recipe's training: three ticks of a throwaway run, the first (warm-up) left out."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        cmd = [sys.executable, "-m", "facesynth", "train", "--data", data, "--out", str(run), "--kimg", f"{kimg:g}",
               "--tick", f"{kimg / 3:g}", "--snap", "1000", "--no-history", "--quiet", *recipe]
        if threads:
            cmd += ["--threads", str(threads)]
        subprocess.run(cmd, check=True)
        ticks = [json.loads(x) for x in (run / "stats.jsonl").read_text().splitlines()]
    speeds = [t["img_per_s"] for t in ticks[1:] if "img_per_s" in t] or [ticks[-1]["img_per_s"]]
    return sum(speeds) / len(speeds)


def metric_columns(metrics: str) -> tuple[list[str], list[str]]:
    """The metrics a table shows, and each one's key in ``measure``'s results (SWD: the mean over scales,
    ×10³ already)."""
    shown = [m.strip() for m in metrics.split(",") if m.strip()]
    return shown, [f"{m}_avg" if m.startswith("swd") else m for m in shown]


def measure(snapshot: Path, heldout: str, metrics: str) -> dict:
    results = compute_metrics(kept_generator(snapshot), heldout, metrics, device="cpu", quiet=True)
    return {k: v for r in results.values() for k, v in r["results"].items()}


def kept_generator(snapshot: Path) -> Path:
    """A measured snapshot's generator: the snapshot while the run keeps it, then its history entry (training
    prunes all but the last few snapshots, the history keeps every one's G_ema)."""
    images = snapshot.name.removeprefix("snapshot-")
    if snapshot.exists() or not images.isdigit():
        return snapshot
    return history_path(snapshot.parent, int(images))


def faces(snapshot: Path, n: int, psi: float = 1.0) -> torch.Tensor:
    """The same seeds for every recipe and checkpoint."""
    G = load_generator(resolve_checkpoint(kept_generator(snapshot)))
    with torch.no_grad():
        z = torch.randn(n, G.z_dim, generator=torch.Generator().manual_seed(0))
        return G(z, truncation_psi=psi, noise_mode="const")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="training images (a facesynth dataset zip)")
    ap.add_argument("--heldout", required=True, help="held-out images, never trained on")
    ap.add_argument("--out", required=True, help="folder for the runs")
    ap.add_argument("--recipes", default=",".join(RECIPES), help=f"comma-separated, of: {', '.join(RECIPES)}; '{START}' measures --start-from as it is")
    ap.add_argument("--minutes", default="60,180", help="cumulative wall-clock minutes to measure at")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads for training and measuring")
    ap.add_argument("--budget", choices=("wall", "speed"), default="wall",
                    help="wall: train for the minutes of wall clock; speed: for the images the recipe's measured "
                         "idle-machine throughput makes in those minutes")
    ap.add_argument("--time-only", action="store_true", help="with --budget speed: time the recipes, then stop")
    ap.add_argument("--speed", default="",
                    help="with --budget speed: NAME=IMG_S,... throughputs to use instead of the timed ones, e.g. a "
                         "side-by-side timing's ratio applied to the machine another table was made on")
    ap.add_argument("--metrics", default=METRICS)
    ap.add_argument("--grid", type=int, default=8, help="faces per recipe and checkpoint in the figure")
    ap.add_argument("--psi", type=float, default=1.0, help="truncation of the figure's faces (metrics: always 1)")
    ap.add_argument("--results", default=str(HERE / "results"))
    ap.add_argument("--name", default="recipe_comparison", help="file name of the table, JSON and figure")
    ap.add_argument("--start-from", default=str(DEFAULT_MODEL), help="the model the finetune-* recipes start from")
    args = ap.parse_args()
    names = [r for r in args.recipes.split(",") if r]
    unknown = [r for r in names if r not in RECIPES and r != START]
    if unknown:
        ap.error(f"unknown recipe(s) {', '.join(unknown)}; choose from {', '.join(RECIPES)}")
    if args.time_only and args.budget != "speed":
        ap.error("--time-only times the recipes for --budget speed")
    try:
        given = {name: float(img_s) for name, img_s in (item.split("=") for item in args.speed.split(",") if item)}
    except ValueError:
        given = None
    if given is None or (given and args.budget != "speed") or any(v <= 0 for v in given.values()):
        ap.error("--speed takes NAME=IMG_S,... (positive img/s) and goes with --budget speed")
    if args.threads:
        torch.set_num_threads(args.threads)  # the measuring too, so comparisons side by side keep to their cores
    marks = sorted(float(m) for m in args.minutes.split(","))
    out, results_dir = Path(args.out), Path(args.results)
    state_file = out / "recipe_comparison.json"
    done = json.loads(state_file.read_text()) if state_file.is_file() else {}
    rows, grids = [], []
    if args.budget == "speed":
        for name, img_s in given.items():
            done = record(state_file, "speed_img_per_s", {name: img_s})
        for name in names:  # all timed before any long training, one after another on the idle machine
            if name != START and name not in done.get("speed_img_per_s", {}):
                speed = training_speed(RECIPES[name], args.data, args.threads)
                done = record(state_file, "speed_img_per_s", {name: speed})
        if args.time_only:
            print(json.dumps(done["speed_img_per_s"]))
            return 0
    for name in names:
        if name == START:
            key = f"{START}@0min"
            if key not in done:
                done = record(state_file, key, {"recipe": START, "minutes": 0, "snapshot": args.start_from,
                                                "kimg": None,
                                                "metrics": measure(Path(args.start_from), args.heldout, args.metrics)})
            rows.append(done[key])
            grids.append((key, faces(Path(args.start_from), args.grid, args.psi)))
            continue
        trained = 0.0
        for mark in marks:
            key = f"{name}@{mark:g}min"
            if key not in done:
                t0 = time.time()
                recipe = [a.replace("{start}", args.start_from) for a in RECIPES[name]]
                run = out / name.replace("+", "-")
                if args.budget == "speed":
                    kimg = mark * 60 * done["speed_img_per_s"][name] / 1000
                    snapshot = train_until(run, recipe, args.data, None, args.threads, kimg=kimg)
                else:
                    snapshot = train_until(run, recipe, args.data, mark - trained, args.threads)
                metrics = measure(snapshot, args.heldout, args.metrics)
                done = record(state_file, key, {
                    "recipe": name, "minutes": mark, "budget": args.budget, "snapshot": str(snapshot),
                    "metrics": metrics, "kimg": snapshot_kimg(snapshot),
                    "wall_s": time.time() - t0})
            trained = mark
            rows.append(done[key])
            grids.append((key, faces(Path(done[key]["snapshot"]), args.grid, args.psi)))
    shown, keys = metric_columns(args.metrics)
    lines = ["| recipe | minutes | kimg | " + " | ".join(shown) + " |", "|---" * (3 + len(shown)) + "|"]
    for r in rows:
        values = [r["metrics"].get(k, float("nan")) for k in keys]
        lines.append(f"| {r['recipe']} | {r['minutes']:g} | {r['kimg'] or 0:.1f} | "
                     + " | ".join(f"{v:.4g}" for v in values) + " |")
    grid = make_grid(torch.cat([im for _, im in grids]), cols=args.grid, upscale=2)
    row_height = grid.shape[0] // len(grids)
    save_png(label_rows(grid, [k.replace("@", "\n") for k, _ in grids], row_height),
             results_dir / f"{args.name}.png")
    write_results(results_dir, args.name, {"environment": environment(), "start_from": args.start_from,
                                          "speed_img_per_s": done.get("speed_img_per_s"), "runs": rows},
                  lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
