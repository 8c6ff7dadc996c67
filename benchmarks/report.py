"""What every benchmark records about the machine, and how it writes its JSON and table."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import torch


def environment(device: torch.device | None = None, **extra) -> dict:
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return {"machine": platform.machine(), "processor": platform.processor(), "cpus": os.cpu_count(),
            "threads": torch.get_num_threads(), "torch": torch.__version__,
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            **extra, "time": time.strftime("%Y-%m-%dT%H:%M:%S")}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def matmul_gflops(device: torch.device | None = None, dtype: torch.dtype = torch.float32, n: int = 2048,
                  repeats: int = 10) -> float:
    """The square matrix-product rate of ``device`` in ``dtype`` (CPU: at PyTorch's current thread count): the
    practical peak that convolution-bound training steps approach."""
    device = device or torch.device("cpu")
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    for _ in range(repeats):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return 2 * n**3 * repeats / (time.perf_counter() - t0) / 1e9


def write_results(outdir: str | Path, name: str, payload: dict, lines: list[str]) -> None:
    """``name``.json (the payload) and ``name``.md (the table lines) in ``outdir``; the table is printed."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    (outdir / f"{name}.json").write_text(json.dumps(payload, indent=2) + "\n")
    (outdir / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
