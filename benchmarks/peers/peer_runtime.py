"""What the peer scripts share; runs inside a peer's venv (imports nothing from facesynth).

stylegan2_pytorch asserts a CUDA GPU when imported and moves every tensor with ``.cuda(rank)``.  On a
CPU-only machine ``import_stylegan2`` lets the import through and turns ``.cuda()`` into a no-op, which
leaves every computation on the CPU and unchanged.
"""

from __future__ import annotations

import json
import os
import sys
import time

import torch


def set_threads() -> int:
    """Follow OMP_NUM_THREADS when it is set (the equal-compute runs pin one thread per trainer)."""
    n = os.environ.get("OMP_NUM_THREADS")
    if n:
        torch.set_num_threads(int(n))
    return torch.get_num_threads()


def import_stylegan2():
    if not torch.cuda.is_available():
        torch.Tensor.cuda = lambda self, *a, **k: self
        torch.nn.Module.cuda = lambda self, *a, **k: self
        real = torch.cuda.is_available
        torch.cuda.is_available = lambda: True  # only for the import-time assert
        try:
            import stylegan2_pytorch.stylegan2_pytorch as sg2
        finally:
            torch.cuda.is_available = real
    else:
        import stylegan2_pytorch.stylegan2_pytorch as sg2
    return sg2


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def gflop(run) -> float:
    """GFLOP of one call of ``run`` (multiply-adds count 2) by PyTorch's FLOP formulas: convolutions, matrix
    products and attention, the operations that dominate every trainer here.  For a training step the
    backward passes (double backward of gradient penalties included) are counted too.

    A dispatch mode of its own rather than FlopCounterMode, whose per-module tracking hooks break
    ``autograd.grad`` (gradient penalties) and views made under no_grad."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import flop_registry

    class Count(TorchDispatchMode):
        total = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            formula = flop_registry.get(func._overloadpacket)
            if formula is not None:
                self.total += formula(*args, **kwargs, out_val=out)
            return out

    with Count() as counter:
        run()
    return counter.total / 1e9


def timed(step, warmup: int, steps: int) -> float:
    """Seconds for ``steps`` calls of ``step`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return time.perf_counter() - t0


def emit(result: dict) -> None:
    """The one line of JSON the driver reads back (everything else goes to stderr)."""
    sys.stdout.write("RESULT " + json.dumps(result) + "\n")
    sys.stdout.flush()
