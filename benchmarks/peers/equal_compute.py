"""Quality at equal compute: facesynth and lucidrains' stylegan2-pytorch each train for the same wall clock at 32x32.

Both run at the same time on the same image folder, each pinned to its own core (taskset -c 0 / -c 1) with
one thread, so any other load on the machine hits both alike.  facesynth trains with its real defaults for the
32x32 config of matched size (configs/stylegan2-32-map8.json: G 5.48M against the peer's 5.31M, both with an
8x512 mapping network); the peer with its CLI's defaults.  Then each writes PNGs (the peer in its own venv, from
its own checkpoint) and facesynth's FID compares both folders with the same real images.

    .venv/bin/python benchmarks/peers/equal_compute.py train [--minutes 30] [--preset stylegan2-32-cpu]
    .venv/bin/python benchmarks/peers/equal_compute.py evaluate [--num 5000]  # PNGs, FID, JSON, table, grids

facesynth trains configs/stylegan2-32-map8.json unless --preset names another preset or GANConfig JSON.
Results are kept per budget and preset (results/equal_compute-30min.json, equal_compute-75min-stylegan2-32-cpu.json,
...), so runs stand side by side in RESULTS.md; runs/equal_compute holds the latest training only.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE.parent))  # benchmarks/: report.py
sys.path.insert(0, str(HERE))

from prepare_data import image_folder  # noqa: E402
from report import cpu_model, environment  # noqa: E402
from results_md import write_results_md  # noqa: E402

RUNS = HERE / "runs" / "equal_compute"
RESULTS = HERE.parent / "results"
CONFIG = HERE / "configs" / "stylegan2-32-map8.json"
FACESYNTH = ROOT / ".venv" / "bin" / "facesynth"
PEER_PY = HERE / ".venv-stylegan2-pytorch" / "bin" / "python"
RES = 32


def one_thread_env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def train(args) -> None:
    data = image_folder(RES)
    if RUNS.exists():
        shutil.rmtree(RUNS)
    RUNS.mkdir(parents=True)
    ours = ["taskset", "-c", "0", str(FACESYNTH), "train", "--data", str(data), "--out", str(RUNS / "facesynth"),
            "--preset", args.preset, "--minutes", str(args.minutes), "--kimg", "100000"]
    peer = ["taskset", "-c", "1", str(PEER_PY), str(HERE / "lucidrains.py"), "train", "--data", str(data),
            "--res", str(RES), "--out", str(RUNS / "lucidrains"), "--minutes", str(args.minutes)]
    procs = {}
    started = time.time()
    for name, cmd in (("facesynth", ours), ("lucidrains", peer)):
        log = open(RUNS / f"{name}.log", "w")
        print(f"{name}: {' '.join(cmd)}", file=sys.stderr)
        procs[name] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=one_thread_env()), time.time())
    walls = {}
    for name, (p, t0) in procs.items():
        if p.wait() != 0:
            raise SystemExit(f"{name} training failed: see {RUNS / (name + '.log')}")
        walls[name] = time.time() - t0
    info = {"minutes": args.minutes, "facesynth_preset": args.preset,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
            "process_seconds": walls, "commands": {"facesynth": ours, "lucidrains": peer},
            "load_average_after": os.getloadavg()}
    (RUNS / "train.json").write_text(json.dumps(info, indent=2) + "\n")
    print(json.dumps(info), file=sys.stderr)


def facesynth_stats(run: Path) -> dict:
    """Images seen (kimg) and training time (elapsed_s) of the run: its last stats line."""
    return json.loads((run / "stats.jsonl").read_text().strip().splitlines()[-1])


def trained_preset(train_info: dict) -> str:
    return train_info.get("facesynth_preset", str(CONFIG))


def preset_label(preset: str) -> str:
    """A config file by its file name, a built-in preset by its name."""
    return Path(preset).name if preset.endswith(".json") else preset


def budget_name() -> str:
    """'equal_compute-30min' (or '...-30min-PRESET' for another preset than the default): the stem of the latest
    run's results and grids."""
    info = json.loads((RUNS / "train.json").read_text())
    preset = trained_preset(info)
    suffix = "" if preset == str(CONFIG) else "-" + preset_label(preset).removesuffix(".json")
    return f"equal_compute-{info['minutes']:g}min{suffix}"


def evaluate(args) -> None:
    real = image_folder(RES)
    stem = budget_name()
    fakes = {"facesynth": RUNS / "facesynth-png", "lucidrains": RUNS / "lucidrains-png"}
    for folder in fakes.values():
        if folder.exists():
            shutil.rmtree(folder)
    env = {**os.environ}
    subprocess.run([str(FACESYNTH), "generate", "--ckpt", str(RUNS / "facesynth"), "--seeds", f"0-{args.num - 1}",
                    "--noise", "random", "--out", str(fakes["facesynth"])], check=True, env=env)
    subprocess.run([str(FACESYNTH), "generate", "--ckpt", str(RUNS / "facesynth"), "--seeds", "0-63",
                    "--noise", "random", "--cols", "8", "--out", str(RESULTS / f"{stem}_facesynth.png")],
                   check=True, env=env)
    subprocess.run([str(PEER_PY), str(HERE / "lucidrains.py"), "generate", "--data", str(real), "--res", str(RES),
                    "--out", str(RUNS / "lucidrains"), "--images", str(fakes["lucidrains"]), "--num", str(args.num)],
                   check=True, env=env)
    shutil.copy(RUNS / "lucidrains-png-grid.png", RESULTS / f"{stem}_lucidrains.png")
    metric = f"fid{args.num // 1000}k" if args.num % 1000 == 0 else f"fid{args.num}"
    fid = {}
    for name, folder in fakes.items():
        out = subprocess.run([str(FACESYNTH), "metrics", "--fakes", str(folder), "--data", str(real),
                              "--metrics", metric, "--quiet"], check=True, env=env, capture_output=True, text=True)
        fid[name] = json.loads(out.stdout.strip().splitlines()[-1])[metric]
        print(f"{name}: {metric} {fid[name]:.2f}", file=sys.stderr)
    report(args, stem, metric, fid)


def report(args, stem: str, metric: str, fid: dict) -> None:
    from facesynth.nets import parameter_counts
    from facesynth.presets import get_preset

    train_info = json.loads((RUNS / "train.json").read_text())
    ours = facesynth_stats(RUNS / "facesynth")
    peer = json.loads((RUNS / "lucidrains" / "stats.json").read_text())
    preset = trained_preset(train_info)
    cfg = get_preset(preset)
    counts = parameter_counts(cfg)
    rows = [
        {"trainer": "facesynth", "config": preset_label(preset), "G_params": counts["G"],
         "G_mapping": counts["G.mapping"],
         "batch": str(cfg.batch), "train_seconds": ours["elapsed_s"],
         "wall_seconds": train_info["process_seconds"]["facesynth"], "images_seen": int(round(ours["kimg"] * 1000)),
         "fid": fid["facesynth"], "generator": "G_ema, psi 1", "grid": f"{stem}_facesynth.png"},
        {"trainer": "lucidrains/stylegan2-pytorch 1.9.0", "config": "its CLI defaults", "G_params": peer["params"]["G"],
         "G_mapping": peer["params"]["G.mapping"],
         "batch": f"{peer['batch']} × {peer['gradient_accumulate_every']} accumulated",
         "train_seconds": peer["train_seconds"], "wall_seconds": train_info["process_seconds"]["lucidrains"],
         "images_seen": peer["images_seen"], "steps": peer["steps"], "fid": fid["lucidrains"],
         "generator": "G, psi 1 (its EMA starts after 20k steps)", "grid": f"{stem}_lucidrains.png"},
    ]
    env = environment(cpu_model=cpu_model(), cores="one core and one thread per trainer (taskset, OMP_NUM_THREADS=1)")
    payload = {"env": env, "resolution": RES, "minutes": train_info["minutes"], "metric": metric, "num": args.num,
               "real_images": f"a fixed random {args.num:,} of the {real_count():,} UTKFace faces at {RES}²",
               "train": train_info, "results": rows}
    (RESULTS / f"{stem}.json").write_text(json.dumps(payload, indent=2) + "\n")
    print(write_results_md())


def real_count() -> int:
    return json.loads((HERE / "data" / f"utkface{RES}.json").read_text())["count"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("train", help="train both for --minutes, in parallel, one core each")
    s.add_argument("--minutes", type=float, default=30.0)
    s.add_argument("--preset", default=str(CONFIG),
                   help="facesynth's preset or GANConfig JSON (default: the 8-layer-mapping config of matched size)")
    s = sub.add_parser("evaluate", help="generate, FID, results JSON, table and sample grids")
    s.add_argument("--num", type=int, default=5000, help="generated images per trainer (and real images)")
    args = ap.parse_args()
    {"train": train, "evaluate": evaluate}[args.cmd](args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
