"""Training throughput of facesynth against two peer trainers at matched generator size, on the same images.

Each case pairs a facesynth config with a peer whose generator has (within 10%) as many parameters, counted
the same way: every generator parameter, the mapping network included.  Runs alternate, ours then the peer,
each in a fresh process (the peer in its own venv), each timing a fixed number of full training steps after
warm-up; img/s is real images consumed per second by the training step, and a case reports the median per
trainer.  Each finished case is written into results/peers_speed.json at once (other cases' results there
are kept, so cases can be run one at a time); benchmarks/RESULTS.md is refreshed at the end.

    .venv/bin/python benchmarks/peers/peers_speed.py [--cases stylegan2-32,stylegan2-64,progan-32] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE.parent))  # benchmarks/: train_speed.py, report.py
sys.path.insert(0, str(HERE))

from prepare_data import image_folder  # noqa: E402
from report import cpu_model, environment, matmul_gflops  # noqa: E402

OURS_PY = ROOT / ".venv" / "bin" / "python"
LUCIDRAINS_PY = HERE / ".venv-stylegan2-pytorch" / "bin" / "python"
PROGAN_PY = HERE / ".venv-pro-gan-pth" / "bin" / "python"

# ours: a preset or config file (@RES: one stage of a grown preset) and its timed steps (a multiple of
# r1_interval 16 for StyleGAN2, so lazy R1 runs at its real frequency; ProGAN's gradient penalty is every step).
# peer: its driver, venv, timed steps (lucidrains: a multiple of its gradient-penalty interval 4).
CASES = {
    "stylegan2-32": {"res": 32, "ours": str(HERE / "configs" / "stylegan2-32-map8.json"), "ours_steps": 16,
                     "peer": "lucidrains", "peer_steps": 4},
    "stylegan2-64": {"res": 64, "ours": "stylegan2-64-cpu", "ours_steps": 16, "peer": "lucidrains", "peer_steps": 4},
    "progan-32": {"res": 32, "ours": "progan-32-paper@32", "ours_steps": 2, "peer": "progan", "peer_steps": 1},
}


def run_json(cmd: list[str]) -> dict:
    """Run one timing process; its last 'RESULT {...}' line is the result."""
    load = os.getloadavg()[0]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{p.stderr[-3000:]}")
    line = [x for x in p.stdout.splitlines() if x.startswith("RESULT ")][-1]
    return {**json.loads(line[len("RESULT "):]), "load_1min_before": load, "load_1min_after": os.getloadavg()[0]}


def ours_cmd(case: dict, data: Path, steps: int | None = None) -> list[str]:
    return [str(OURS_PY), str(Path(__file__)), "ours", "--spec", case["ours"], "--data", str(data),
            "--steps", str(case["ours_steps"] if steps is None else steps)]


def peer_cmd(case: dict, data: Path, tmp: Path, steps: int | None = None) -> list[str]:
    steps = str(case["peer_steps"] if steps is None else steps)
    if case["peer"] == "lucidrains":
        return [str(LUCIDRAINS_PY), str(HERE / "lucidrains.py"), "speed", "--data", str(data), "--res",
                str(case["res"]), "--out", str(tmp / f"lucidrains{case['res']}"), "--steps", steps]
    return [str(PROGAN_PY), str(HERE / "progan.py"), "speed", "--data", str(data), "--res", str(case["res"]),
            "--steps", steps]


def time_ours(args) -> int:
    """In facesynth's venv: train_speed.time_preset on the shared image folder (--steps 0: FLOPs only)."""
    import torch
    from peer_runtime import gflop
    from train_speed import time_preset

    from facesynth.nets import build_generator, parameter_counts
    from facesynth.presets import get_preset

    name, _, stage = args.spec.partition("@")
    cfg = get_preset(name)
    G = build_generator(cfg)  # a grown preset's G at its full resolution: the stage timed in every case here
    full = not stage or int(stage) == cfg.resolution
    g_gflop = gflop(lambda: G(torch.randn(1, cfg.z_dim))) if full else None
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        # Counting: one step after the timed ones (for StyleGAN2, a step without lazy R1).
        r = time_preset(args.spec, args.steps, Path(tmp), data=Path(args.data),
                        count=None if args.steps else gflop)
    if not args.steps:
        print("RESULT " + json.dumps({"G_gflop_per_image": g_gflop,
                                      "train_gflop_per_update_image": r["counted"] / r["batch"]}), flush=True)
        return 0
    counts = parameter_counts(cfg)
    name = Path(r["preset"]).stem if r["preset"].endswith(".json") else r["preset"]
    result = {"trainer": f"facesynth {name}", "resolution": r["resolution"], "batch": r["batch"],
              "images_per_step": r["batch"], "params": {"G": counts["G"], "G.mapping": counts["G.mapping"],
                                                        "D": counts["D"]}, "G_gflop_per_image": g_gflop,
              "steps": r["steps"], "warmup_steps": 2, "seconds": r["seconds"], "img_per_s": r["img_per_s"],
              "threads": torch.get_num_threads()}
    print("RESULT " + json.dumps(result), flush=True)
    return 0


def summarize(name: str, case: dict, runs: dict) -> list[dict]:
    rows = []
    for who in ("ours", "peer"):
        first = runs[who][0]
        rows.append({"case": name, "resolution": case["res"], "who": who, "trainer": first["trainer"],
                     "G_params": first["params"]["G"], "G_mapping": first["params"]["G.mapping"],
                     "D_params": first["params"]["D"], "G_gflop_per_image": first.get("G_gflop_per_image"),
                     "batch": first["batch"],
                     "gradient_accumulate_every": first.get("gradient_accumulate_every", 1),
                     "batch_repeats": first.get("batch_repeats", 1), "images_per_step": first["images_per_step"],
                     "img_per_s_runs": [r["img_per_s"] for r in runs[who]],
                     "img_per_s": statistics.median(r["img_per_s"] for r in runs[who])})
    ours, peer = rows
    ours["ratio"] = peer["ratio"] = ours["img_per_s"] / peer["img_per_s"]
    ours["G_params_vs_peer"] = ours["G_params"] / peer["G_params"]
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd")
    s = sub.add_parser("ours", help="(internal) time one facesynth config in this process")
    s.add_argument("--spec", required=True)
    s.add_argument("--data", required=True)
    s.add_argument("--steps", type=int, required=True)
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--rounds", type=int, default=2, help="ours/peer pairs per case (the median is reported)")
    ap.add_argument("--out", default=str(HERE.parent / "results"))
    ap.add_argument("--flops-only", action="store_true",
                    help="only count each generator's FLOPs per image, into the results already there")
    args = ap.parse_args()
    if args.cmd == "ours":
        return time_ours(args)
    for py in (LUCIDRAINS_PY, PROGAN_PY):
        if not py.is_file():
            raise SystemExit(f"{py} is missing: run bash benchmarks/peers/setup.sh first")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.cases.split(","):
            case = CASES[name]
            data = image_folder(case["res"])
            if args.flops_only:
                add_flops(Path(args.out) / "peers_speed.json", name, {
                    "ours": run_json(ours_cmd(case, data, steps=0)),
                    "peer": run_json(peer_cmd(case, data, Path(tmp), steps=0))})
                continue
            started = time.strftime("%Y-%m-%dT%H:%M:%S")
            runs, log = {"ours": [], "peer": []}, []
            for rnd in range(args.rounds):
                for who, cmd in (("ours", ours_cmd(case, data)), ("peer", peer_cmd(case, data, Path(tmp)))):
                    r = run_json(cmd)
                    runs[who].append(r)
                    log.append({"case": name, "round": rnd, "who": who, "started": started, **r})
                    print(f"{name} round {rnd} {who}: {r['img_per_s']:.2f} img/s "
                          f"(load {r['load_1min_before']:.1f})", file=sys.stderr, flush=True)
            save_case(Path(args.out) / "peers_speed.json", name, summarize(name, case, runs), log, args.rounds)
    from results_md import write_results_md

    print(write_results_md())
    return 0


def add_flops(path: Path, name: str, counted: dict) -> None:
    """Put the counted FLOPs (G per image; per image of one D+G update where counted) into a case's rows."""
    data = json.loads(path.read_text())
    for r in data["results"]:
        if r["case"] == name:
            r.update({k: v for k, v in counted[r["who"]].items() if k.endswith("gflop_per_image")
                      or k.endswith("gflop_per_update_image")})
    data["env"]["matmul_gflops"] = matmul_gflops()
    path.write_text(json.dumps(data, indent=2) + "\n")


def save_case(path: Path, name: str, rows: list[dict], log: list[dict], rounds: int) -> None:
    """Write one finished case into the results file, keeping the other cases' results there."""
    old = json.loads(path.read_text()) if path.is_file() else {"results": [], "runs": []}
    order = list(CASES)
    results = sorted([r for r in old["results"] if r["case"] != name] + rows,
                     key=lambda r: (order.index(r["case"]) if r["case"] in order else len(order), r["who"]))
    runs = [r for r in old["runs"] if r["case"] != name] + log
    env = {**environment(cpu_model=cpu_model()), "matmul_gflops": matmul_gflops()}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"env": env, "rounds": rounds, "results": results, "runs": runs}, indent=2) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
