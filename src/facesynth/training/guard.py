"""Non-finite losses and gradients: an optimizer step whose loss or gradients hold NaN/Inf is skipped, and a
diagnosis names the loss and the first layer that produced a non-finite value.

The check runs on the device without waiting for it (no host synchronisation in the step): a bad step's
fused Adam update is skipped on the device (weights, moments and step count stay as they were), and a
per-loss counter of skipped steps is read once per log tick.
"""

from __future__ import annotations

import torch
from torch import nn

from .optim import parameters_with_grad, skip_if


class NonFiniteGuard:
    def __init__(self):
        self.counts: dict[str, torch.Tensor] = {}

    def check(self, name: str, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        """Call after backward (and the gradient all-reduce), before ``optimizer.step()``."""
        grads = [p.grad for p in parameters_with_grad(optimizer)]
        finite = torch.isfinite(loss.detach()).all()
        if grads:
            finite = finite & torch.isfinite(torch.stack(torch._foreach_norm(grads))).all()
        skip_if(optimizer, ~finite)
        bad = (~finite).to(torch.int32)
        self.counts[name] = self.counts[name] + bad if name in self.counts else bad

    def take(self) -> dict[str, int]:
        """Skipped steps per loss since the last call (this reads the device: call it once per tick)."""
        out = {k: int(v) for k, v in self.counts.items()}
        self.counts = {}
        return {k: v for k, v in out.items() if v}


def finite_means(acc: dict[str, list[torch.Tensor]]) -> torch.Tensor:
    """Each statistic's mean over a tick's steps, leaving out the non-finite values of skipped steps."""
    means = []
    for values in acc.values():
        t = torch.stack(values).float()
        finite = torch.isfinite(t)
        means.append(torch.where(finite, t, 0).sum() / finite.sum().clamp(min=1))
    return torch.stack(means)


def nonfinite_parameters(modules: dict[str, nn.Module]) -> list[str]:
    return [f"{prefix}.{n}" for prefix, m in modules.items() for n, p in m.named_parameters()
            if not torch.isfinite(p).all()]


@torch.no_grad()
def first_nonfinite_output(modules: dict[str, nn.Module], forward) -> str | None:
    """The first module, in call order, whose output holds NaN/Inf while ``forward()`` runs."""
    found: list[str] = []
    hooks = []

    def watch(name):
        def hook(module, inputs, output):
            outs = output if isinstance(output, (tuple, list)) else (output,)
            if not found and any(isinstance(o, torch.Tensor) and o.is_floating_point() and not torch.isfinite(o).all()
                                 for o in outs):
                found.append(name)
        return hook

    # A module's hook fires after its children's, so the first hit is the innermost layer at fault.
    for prefix, m in modules.items():
        for n, sub in m.named_modules():
            hooks.append(sub.register_forward_hook(watch(f"{prefix}.{n}" if n else prefix)))
    try:
        forward()
    finally:
        for h in hooks:
            h.remove()
    return found[0] if found else None


def diagnosis(skipped: dict[str, int], modules: dict[str, nn.Module], forward) -> str:
    losses = ", ".join(f"{k} ({v} steps)" for k, v in skipped.items()) or "none"
    params = nonfinite_parameters(modules)
    layer = first_nonfinite_output(modules, forward)
    shown = ", ".join(params[:5]) + (f" and {len(params) - 5} more" if len(params) > 5 else "")
    return (f"non-finite losses: {losses}; non-finite weights: {shown or 'none'}; "
            f"first layer with a non-finite output: {layer or 'none (the loss itself overflowed)'}")


__all__ = ["NonFiniteGuard", "finite_means", "nonfinite_parameters", "first_nonfinite_output", "diagnosis"]
