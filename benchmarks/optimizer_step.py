"""The parameter updates of a training step, before and now: G's and D's Adam update (with the NaN/Inf check of
the gradients) as multi-tensor (foreach) Adam with a bad step's gradients zeroed one tensor at a time, against
fused Adam told on the device to skip a bad step (training/optim.py); and the EMA of G as a lerp and a copy per
tensor, against multi-tensor kernels (training/loop.py: update_ema).  Forms alternate, best of ``--repeats`` per
round, median over rounds.  Writes results/optimizer_step.json/.md.

    python benchmarks/optimizer_step.py [--presets stylegan2-32-cpu,stylegan2-64-cpu,stylegan2-256-paper]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from pathlib import Path

import torch
from report import environment, write_results

from facesynth.nets import build_discriminator, build_generator
from facesynth.presets import get_preset
from facesynth.training.guard import NonFiniteGuard
from facesynth.training.loop import update_ema
from facesynth.training.optim import adam

BETAS = (0.0, 0.99)


def adam_update(net: torch.nn.Module, form: str, device: torch.device):
    """G's or D's update: the NaN/Inf check, then Adam.  The guard zeroes a bad step's gradients for a non-fused
    optimizer and tells a fused one to skip."""
    for p in net.parameters():
        p.grad = torch.randn_like(p) * 1e-3
    loss = torch.ones((), device=device)
    opt = adam(net.parameters(), lr=1e-3, betas=BETAS) if form == "now" else \
        torch.optim.Adam(net.parameters(), lr=1e-3, betas=BETAS, foreach=True)
    guard = NonFiniteGuard()

    def update():
        guard.check("loss", loss, opt)
        opt.step()

    return update


def ema_update(G: torch.nn.Module, form: str, device: torch.device):
    """G_ema toward G: a lerp and a copy per tensor, or update_ema's multi-tensor kernels."""
    G_ema = copy.deepcopy(G)

    @torch.no_grad()
    def per_tensor():
        for pe, p in zip(G_ema.parameters(), G.parameters()):
            pe.copy_(p.detach().lerp(pe, 0.999))
        for be, b in zip(G_ema.buffers(), G.buffers()):
            be.copy_(b)

    return (lambda: update_ema(G_ema, G, 0.999)) if form == "now" else per_tensor


def best_ms(update, device: torch.device, repeats: int) -> float:
    update()  # Adam allocates its moments in the first step
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
        G, D = build_generator(cfg).to(device), build_discriminator(cfg).to(device)
        for what, net, make in (("G: check + Adam", G, adam_update), ("D: check + Adam", D, adam_update),
                                ("G_ema: EMA of G", G, ema_update)):
            times = {"before": [], "now": []}
            for _ in range(args.rounds):
                for form in times:
                    times[form].append(best_ms(make(net, form, device), device, args.repeats))
            ms = {form: statistics.median(v) for form, v in times.items()}
            rows.append({"preset": name, "update": what, "params": sum(p.numel() for p in net.parameters()),
                         "tensors": sum(1 for _ in net.parameters()), "ms": ms, "runs_ms": times,
                         "speedup": ms["before"] / ms["now"]})
    env = environment(device)
    lines = [f"Parameter updates of a training step, {env['device']}, {env['threads']} threads, torch {env['torch']}; "
             f"median of {args.rounds} rounds, each the best of {args.repeats}. Before: multi-tensor Adam with a bad "
             "step's gradients zeroed tensor by tensor, and the EMA as a lerp and a copy per tensor. Now: fused Adam "
             "told on the device to skip a bad step, and the EMA in multi-tensor kernels.", "",
             "| preset | update | params | tensors | before (ms) | now (ms) | speed-up |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['preset']} | {r['update']} | {r['params'] / 1e6:.2f}M | {r['tensors']} "
                     f"| {r['ms']['before']:.2f} | {r['ms']['now']:.2f} | **{r['speedup']:.2f}×** |")
    write_results(args.out, f"optimizer_step{'-cuda' if device.type == 'cuda' else ''}",
                  {"environment": env, "rounds": args.rounds, "repeats": args.repeats, "rows": rows}, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
