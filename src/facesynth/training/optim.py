"""Adam as the trainers run it: PyTorch's fused kernels, one pass over every tensor of the optimizer (on a CPU,
with the NaN/Inf check, 2.5-3.5x the speed of the multi-tensor form: benchmarks/results/optimizer_step.md; on a
GPU one launch instead of several per group).  The fused step can also be skipped on the device, with no host
synchronisation, when the step's loss or gradients are not finite (guard.py)."""

from __future__ import annotations

from collections.abc import Iterable

import torch


def _fused_devices() -> list[str]:
    try:  # the installed PyTorch's own list
        from torch.utils._foreach_utils import _get_fused_kernels_supported_devices
        return _get_fused_kernels_supported_devices()
    except ImportError:
        return ["cuda", "cpu"]


def adam(params: Iterable[torch.nn.Parameter], lr: float, betas: tuple[float, float], eps: float = 1e-8
         ) -> torch.optim.Adam:
    """Fused Adam where the parameters' device has the kernels, else the multi-tensor form."""
    params = list(params)
    fused = all(p.device.type in _fused_devices() for p in params)
    return torch.optim.Adam(params, lr=lr, betas=(float(betas[0]), float(betas[1])), eps=eps,
                            fused=fused or None)


def skip_if(optimizer: torch.optim.Optimizer, bad: torch.Tensor) -> None:
    """Make the next ``optimizer.step()`` leave weights, moments and step count as they are when ``bad``
    (a 0-dim bool tensor on the device) is true; the decision stays on the device."""
    if optimizer.defaults.get("fused"):
        # Fused Adam reads `found_inf` as GradScaler sets it: 1.0 skips the whole update.
        optimizer.found_inf = bad.to(torch.float32)
        return
    # Other optimizers: zero gradients of a bad step (with Adam's beta1 = 0 the weights then stay; with
    # momentum they would still move, which is why the trainers use the fused form).
    for p in parameters_with_grad(optimizer):
        p.grad.nan_to_num_(0.0, 0.0, 0.0).mul_(~bad)


def parameters_with_grad(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]


__all__ = ["adam", "skip_if", "parameters_with_grad"]
