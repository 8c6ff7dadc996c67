"""Which device a command runs on: ``--device``, where ``auto`` means $FACESYNTH_DEVICE if set, else the first of
CUDA, Apple's MPS and the CPU that PyTorch can use."""

from __future__ import annotations

import os

import torch

from ..errors import FacesynthError

DEVICE_ENV = "FACESYNTH_DEVICE"


def pick_device(name: str = "auto") -> torch.device:
    source = "--device"
    if name == "auto" and os.environ.get(DEVICE_ENV, "auto") != "auto":
        name, source = os.environ[DEVICE_ENV], f"${DEVICE_ENV}"
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise FacesynthError(f"{source}: unknown device {name!r} (use auto, cpu, cuda, cuda:N or mps)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise FacesynthError(f"{source} asks for {name}, but PyTorch sees no CUDA GPU here")
    return dev


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``t`` on ``device``; from the CPU to a GPU through pinned memory, so the copy does not wait for the GPU."""
    if device.type == "cuda" and t.device.type == "cpu":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


__all__ = ["DEVICE_ENV", "pick_device", "to_device"]
