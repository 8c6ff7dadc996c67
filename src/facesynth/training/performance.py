"""How a training step runs fast on a device: reduced precision for the highest resolutions, channels-last
memory layout, torch.compile, and the form of the modulated convolution.

``auto`` settings follow the device: on a CUDA GPU bfloat16 for the top four resolutions (as StyleGAN2-ADA
runs its top four in float16; bfloat16 has float32's range, so it needs neither loss scaling nor activation
clamping), channels-last, and the modulated-convolution form that times faster on this GPU for this model;
on a CPU float32 in the default layout and the shared form (benchmarks/train_speed.py measures each choice).
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import asdict, dataclass

import torch

from ..errors import FacesynthError
from ..nets import layers

PRECISIONS = ("auto", "fp32", "bf16")
SWITCHES = ("auto", "on", "off")
MODCONV_FORMS = ("auto", "shared", "grouped")


@dataclass(frozen=True)
class Performance:
    """The settings a run resolved to (recorded in training_options.json)."""

    precision: str = "fp32"
    reduced_resolutions: int = 4  # the top N resolutions of G and D run in `precision` when it is bf16
    channels_last: bool = False
    compile: bool = False
    modconv: str = "shared"

    def to_dict(self) -> dict:
        return asdict(self)

    def replace(self, **changes) -> Performance:
        return dataclasses.replace(self, **changes)

    @property
    def dtype(self) -> torch.dtype | None:
        return torch.bfloat16 if self.precision == "bf16" else None


def resolve(device: torch.device, precision: str = "auto", channels_last: str = "auto", compile: bool = False,
            modconv: str = "auto", reduced_resolutions: int = 4) -> Performance:
    """Concrete settings for ``device``; ``modconv="auto"`` stays "auto" until ``choose_modconv`` times it."""
    for value, allowed, what in ((precision, PRECISIONS, "precision"), (channels_last, SWITCHES, "channels-last"),
                                 (modconv, MODCONV_FORMS, "modconv")):
        if value not in allowed:
            raise FacesynthError(f"{what} must be one of {', '.join(allowed)}, not {value!r}")
    if reduced_resolutions < 0:
        raise FacesynthError(f"the number of reduced-precision resolutions must be >= 0, got {reduced_resolutions}")
    cuda = device.type == "cuda"
    if precision == "auto":
        precision = "bf16" if cuda and torch.cuda.is_bf16_supported() else "fp32"
    if modconv == "auto" and not cuda:
        modconv = "shared"  # 2x the grouped form's speed on CPUs (benchmarks/results/modconv_forms.md)
    return Performance(precision=precision, reduced_resolutions=reduced_resolutions,
                       channels_last=cuda if channels_last == "auto" else channels_last == "on",
                       compile=compile, modconv=modconv)


def reduced_precision_from(cfg, count: int) -> int:
    """The lowest resolution run in reduced precision when the top ``count`` are (never below 8x8, as ADA)."""
    if count <= 0:
        return cfg.resolution * 2
    return max(cfg.resolution >> (count - 1), 8)


def apply(perf: Performance, cfg, *nets: torch.nn.Module) -> None:
    """Mark the high-resolution blocks of G and D for reduced precision and set the memory layout."""
    lowest = reduced_precision_from(cfg, perf.reduced_resolutions)
    for net in nets:
        for m in net.modules():
            if isinstance(m, layers.ReducedPrecision):
                m.compute_dtype = perf.dtype if m.resolution >= lowest else None
        if perf.channels_last:
            net.to(memory_format=torch.channels_last)
    layers.MODCONV_FORM = perf.modconv if perf.modconv != "auto" else layers.MODCONV_FORM


def choose_modconv(G: torch.nn.Module, batch: int, z_dim: int, device: torch.device, repeats: int = 3) -> str:
    """Time a forward and backward pass of G with each form of the modulated convolution; the faster wins.

    The global RNG is left as it was, so the choice does not change the run's random numbers.
    """
    cpu_state = torch.get_rng_state()
    cuda_state = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    times = {}
    try:
        z = torch.randn(batch, z_dim, device=device)
        for form in ("shared", "grouped"):
            layers.MODCONV_FORM = form
            best = float("inf")
            for i in range(repeats + 1):  # the first pass selects kernels and allocates: not timed
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                t0 = time.perf_counter()
                G.synthesis(G.mapping(z)).square().mean().backward()
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                if i:
                    best = min(best, time.perf_counter() - t0)
            times[form] = best
    finally:
        G.zero_grad(set_to_none=True)
        torch.set_rng_state(cpu_state)
        if cuda_state is not None:
            torch.cuda.set_rng_state(cuda_state, device)
    choice = min(times, key=times.get)
    layers.MODCONV_FORM = choice
    return choice


def autocast(device: torch.device, perf: Performance):
    """Mixed precision for a whole network (used where blocks are not marked per resolution): matrix products
    and convolutions in ``perf.dtype``, reductions and norms as autocast keeps them; weights stay float32."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=perf.dtype is not None)


def compiled(module: torch.nn.Module, enabled: bool) -> torch.nn.Module:
    """``torch.compile(module)`` sharing its parameters, or the module itself ($FACESYNTH_COMPILE_BACKEND picks
    another backend than inductor).

    Only the main loss passes use compiled modules: regularisers need double backward, which compiled
    graphs do not support.
    """
    if not enabled:
        return module
    try:
        import torch._inductor.config as inductor_config

        # Random ops keep eager's generator, so a compiled run draws the numbers an eager one would.
        inductor_config.fallback_random = True
        return torch.compile(module, dynamic=False, backend=os.environ.get("FACESYNTH_COMPILE_BACKEND", "inductor"))
    except Exception as e:  # e.g. no compiler toolchain on this platform
        raise FacesynthError(f"--compile is not available here: {e}") from None


__all__ = ["Performance", "resolve", "apply", "autocast", "choose_modconv", "compiled", "reduced_precision_from"]
