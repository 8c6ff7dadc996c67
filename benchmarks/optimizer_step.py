"""The optimizer update of a training step, G's and D's, in the two forms PyTorch offers: multi-tensor (foreach)
Adam with a bad step's gradients zeroed one tensor at a time, against fused Adam told on the device to skip a
bad step (what facesynth's trainers run; training/optim.py).  Both include the NaN/Inf check of the gradients.
Forms alternate, best of ``--repeats`` per round, median over rounds.  Writes results/optimizer_step.json/.md.

    python benchmarks/optimizer_step.py [--presets stylegan2-32-cpu,stylegan2-64-cpu,stylegan2-256-paper]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from report import environment, write_results

from facesynth.nets import build_discriminator, build_generator
from facesynth.presets import get_preset
from facesynth.training.guard import NonFiniteGuard
from facesynth.training.optim import adam

BETAS = (0.0, 0.99)


def time_update(net: torch.nn.Module, form: str, device: torch.device, repeats: int) -> float:
    for p in net.parameters():
        p.grad = torch.randn_like(p) * 1e-3
    loss = torch.ones((), device=device)
    # The guard zeroes a bad step's gradients for a non-fused optimizer, and tells a fused one to skip.
    opt = adam(net.parameters(), lr=1e-3, betas=BETAS) if form == "fused" else \
        torch.optim.Adam(net.parameters(), lr=1e-3, betas=BETAS, foreach=True)
    guard = NonFiniteGuard()

    def update():
        guard.check("loss", loss, opt)
        opt.step()

    update()  # the moments are allocated in the first step
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        update()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - t0)
    return best * 1e3


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", default="stylegan2-32-cpu,stylegan2-64-cpu,stylegan2-256-paper")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = ap.parse_args()
    device = torch.device(args.device)
    rows = []
    for name in args.presets.split(","):
        cfg = get_preset(name)
        for which, build in (("G", build_generator), ("D", build_discriminator)):
            net = build(cfg).to(device)
            times = {"multi-tensor": [], "fused": []}
            for _ in range(args.rounds):
                for form in times:
                    times[form].append(time_update(net, form, device, args.repeats))
            ms = {form: statistics.median(v) for form, v in times.items()}
            rows.append({"preset": name, "net": which, "params": sum(p.numel() for p in net.parameters()),
                         "tensors": sum(1 for _ in net.parameters()), "ms": ms, "runs_ms": times,
                         "speedup": ms["multi-tensor"] / ms["fused"]})
    env = environment(device)
    lines = [f"Optimizer update (NaN/Inf check + Adam step) per network, {env['device']}, {env['threads']} threads, "
             f"torch {env['torch']}; median of {args.rounds} rounds, each the best of {args.repeats}.", "",
             "| preset | net | params | tensors | multi-tensor Adam, zeroing (ms) | fused Adam, skip on device (ms) "
             "| speed-up |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['preset']} | {r['net']} | {r['params'] / 1e6:.2f}M | {r['tensors']} "
                     f"| {r['ms']['multi-tensor']:.2f} | {r['ms']['fused']:.2f} | **{r['speedup']:.2f}×** |")
    write_results(args.out, f"optimizer_step{'-cuda' if device.type == 'cuda' else ''}",
                  {"environment": env, "rounds": args.rounds, "repeats": args.repeats, "rows": rows}, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
