"""Adam as the trainers run it: PyTorch's fused kernels, one pass over every tensor of the optimizer (on a CPU
about 5x the speed of the multi-tensor form: benchmarks/results/optimizer_step.md; on a GPU one launch instead
of several per group).  The fused step can also be skipped on the device, with no host synchronisation, when
the step's loss or gradients are not finite (guard.py)."""

from __future__ import annotations

from collections.abc import Iterable

import torch


def adam(params: Iterable[torch.nn.Parameter], lr: float, betas: tuple[float, float], eps: float = 1e-8
         ) -> torch.optim.Adam:
    return torch.optim.Adam(list(params), lr=lr, betas=(float(betas[0]), float(betas[1])), eps=eps, fused=True)


def skip_if(optimizer: torch.optim.Optimizer, bad: torch.Tensor) -> None:
    """Make the next ``optimizer.step()`` leave weights, moments and step count as they are when ``bad``
    (a 0-dim bool tensor on the device) is true; the decision stays on the device."""
    # Fused Adam reads `found_inf` as GradScaler sets it: 1.0 skips the whole update.
    optimizer.found_inf = bad.to(torch.float32)


def parameters_with_grad(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]


__all__ = ["adam", "skip_if", "parameters_with_grad"]
