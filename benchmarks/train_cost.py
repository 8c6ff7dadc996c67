"""What training costs on this device: s/kimg, peak memory and model FLOP utilisation (MFU) per preset.

Each preset trains full steps (G, D, lazy regularisers at their real frequency) with the settings
``facesynth train`` resolves for the device (on a GPU: bfloat16 for the top four resolutions, channels-last,
the faster modulated convolution), after warm-up.  Its arithmetic per real image is counted with PyTorch's
FLOP formulas over a whole regularisation cycle (one step of every kind at its frequency); FLOP/s set against
the device's dense bfloat16 tensor peak is the MFU (``--peak-tflops`` for a device not listed), and against
the matrix-product rate measured here in the run's precision, how close the step comes to what this device
computes in practice.  Writes results/train_cost-<device>.json and .md (RESULTS.md shows them).

    python benchmarks/train_cost.py                        # GPU: stylegan2-{64,128,256}-paper; CPU: the CPU presets
    python benchmarks/train_cost.py --compile              # also each preset with torch.compile
    python benchmarks/train_cost.py --presets stylegan2-256-paper --steps 32 --peak-tflops 989
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from pathlib import Path

import torch
from report import cpu_model, environment, matmul_gflops, write_results
from train_speed import time_preset

from facesynth.presets import get_preset

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "peers"))
from peer_runtime import gflop  # noqa: E402

GPU_PRESETS = "stylegan2-64-paper,stylegan2-128-paper,stylegan2-256-paper"
CPU_PRESETS = "stylegan2-32-cpu,stylegan2-64-cpu"

# Dense (no sparsity) bfloat16 tensor-core peaks from the vendors' data sheets, TFLOP/s; V100 has no bfloat16,
# its float16 peak stands in.  Matched in order against the device name, so "H100 PCIe" precedes "H100".
PEAK_TFLOPS = (("H200", 989.4), ("H100 PCIe", 756.0), ("H100", 989.4), ("A100", 312.0), ("L40S", 362.1),
               ("L4", 121.0), ("A10G", 70.0), ("V100", 125.0))


def spec_peak_tflops(device_name: str) -> float | None:
    return next((peak for name, peak in PEAK_TFLOPS if name in device_name), None)


def regularisation_cycle(spec: str) -> int:
    """Steps after which every lazy regulariser has run its share: the window the FLOPs are counted over."""
    cfg = get_preset(spec.partition("@")[0])
    intervals = [cfg.r1_interval if cfg.r1_gamma > 0 else 1, cfg.pl_interval if cfg.pl_weight > 0 else 1]
    return math.lcm(*intervals)


def cost(spec: str, steps: int, tmp: Path, compile: bool, gflop_per_image: float | None) -> dict:
    """Time ``spec``; count its FLOPs per image unless given (a compiled run does the eager run's arithmetic)."""
    cycle = regularisation_cycle(spec)

    def count(run_step):
        return gflop(lambda: [run_step() for _ in range(cycle)]) / cycle

    r = time_preset(spec, steps, tmp, count=None if gflop_per_image else count, compile=compile)
    r["train_gflop_per_image"] = gflop_per_image or r["counted"] / r["batch"]
    r["s_per_kimg"] = 1000 / r["img_per_s"]
    r["tflop_per_s"] = r["train_gflop_per_image"] * r["img_per_s"] / 1000
    return r


def table(payload: dict) -> list[str]:
    env = payload["env"]
    peak, measured = env["peak_tflops"], env["matmul_tflops"]
    where = env["device"] if env["device"] != "cpu" else f"{env['cpus']} CPUs ({env['cpu_model']})"
    mfu_note = (f"MFU is against {peak:g} TFLOP/s ({env['peak_source']})" if peak else
                "MFU needs a data-sheet peak (GPUs listed in train_cost.py, or --peak-tflops)")
    lines = [f"Training cost on {where}, torch {env['torch']}, {env['time']}. {mfu_note}; 'of matmul' against "
             f"the {measured:.3g} TFLOP/s of a {env['matmul_dtype']} {env['matmul_n']}² matrix product measured in "
             "the same run. "
             "Train GFLOP/img: one real image through a full step (G and D passes, lazy regularisers at their "
             "frequency), by PyTorch's FLOP counter.", "",
             "| preset | res | batch | G params | precision | channels-last | modconv | compile | s/kimg | img/s | "
             "peak memory | train GFLOP/img | TFLOP/s | MFU | of matmul |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in payload["results"]:
        perf = r["performance"]
        precision = (f"bf16 top {perf['reduced_resolutions']}" if perf["precision"] == "bf16" else perf["precision"])
        memory = f"{r['peak_memory_mb'] / 1024:.1f} GiB" if r["peak_memory_mb"] is not None else "–"
        mfu = f"{r['tflop_per_s'] / peak:.1%}" if peak else "–"
        cells = [r["preset"], f"{r['resolution']}²", r["batch"], f"{r['G_params'] / 1e6:.1f}M", precision,
                 "yes" if perf["channels_last"] else "no", perf["modconv"], "yes" if perf["compile"] else "no",
                 f"{r['s_per_kimg']:.2f}", f"{r['img_per_s']:.1f}", memory, f"{r['train_gflop_per_image']:.3g}",
                 f"{r['tflop_per_s']:.3g}", mfu, f"{r['tflop_per_s'] / measured:.0%}"]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", help=f"comma-separated (default: {GPU_PRESETS} on a GPU, {CPU_PRESETS} on a CPU)")
    ap.add_argument("--steps", type=int, default=32, help="timed steps per preset (a multiple of 16 is fair to R1)")
    ap.add_argument("--compile", action="store_true", help="also time each preset with torch.compile")
    ap.add_argument("--peak-tflops", type=float, help="the device's peak for MFU (default: its data-sheet bf16 peak)")
    ap.add_argument("--out", default=str(HERE / "results"))
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    presets = (args.presets or (GPU_PRESETS if device.type == "cuda" else CPU_PRESETS)).split(",")
    torch.manual_seed(0)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for spec in presets:
            r = cost(spec, args.steps, Path(tmp), compile=False, gflop_per_image=None)
            results.append(r)
            print(f"{spec}: {r['s_per_kimg']:.2f} s/kimg, {r['tflop_per_s']:.3g} TFLOP/s", file=sys.stderr)
            if args.compile:
                results.append(cost(spec, args.steps, Path(tmp), compile=True,
                                    gflop_per_image=r["train_gflop_per_image"]))
                print(f"{spec} compiled: {results[-1]['s_per_kimg']:.2f} s/kimg", file=sys.stderr)
    # The measured matmul rate in the precision most of the arithmetic ran in.
    dtype = torch.bfloat16 if results[-1]["performance"]["precision"] == "bf16" else torch.float32
    sheet = spec_peak_tflops(torch.cuda.get_device_name(device)) if device.type == "cuda" else None
    peak = args.peak_tflops or sheet
    source = "--peak-tflops" if args.peak_tflops else "data-sheet dense bf16 peak" if sheet else None
    n = 8192 if device.type == "cuda" else 2048  # a GPU needs a large product to reach its rate
    env = environment(device, cpu_model=cpu_model(), matmul_dtype=str(dtype).removeprefix("torch."), matmul_n=n,
                      matmul_tflops=matmul_gflops(device, dtype, n=n) / 1000, peak_tflops=peak, peak_source=source)
    payload = {"env": env, "results": results}
    write_results(args.out, f"train_cost-{device.type}", payload, table(payload))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
