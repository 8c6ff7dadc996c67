"""benchmarks/train_cost.py: s/kimg and the FLOPs a training step does, counted over a regularisation cycle;
benchmarks/optimizer_step.py: the parameter updates of a step, in both forms."""

import json
import subprocess
import sys
from pathlib import Path

import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def test_train_cost_counts_a_full_step(tmp_path):
    subprocess.run([sys.executable, str(BENCH / "train_cost.py"), "--presets", "tiny", "--steps", "2",
                    "--out", str(tmp_path)], check=True, capture_output=True, text=True)
    payload = json.loads((tmp_path / "train_cost-cpu.json").read_text())
    (r,) = payload["results"]
    assert r["preset"] == "tiny" and r["performance"]["precision"] == "fp32"
    assert abs(r["s_per_kimg"] * r["img_per_s"] - 1000) < 1e-6
    assert payload["env"]["matmul_tflops"] > 0 and payload["env"]["peak_tflops"] is None  # no data-sheet peak on a CPU

    # A step runs G forward several times (G and D passes) plus backward passes, so it must cost well over three
    # G forwards per real image; the counter sees every convolution and matrix product.
    sys.path[:0] = [str(BENCH), str(BENCH / "peers")]
    try:
        from peer_runtime import gflop

        from facesynth.nets import build_generator
        from facesynth.presets import get_preset
    finally:
        del sys.path[:2]
    cfg = get_preset("tiny")
    G = build_generator(cfg)
    with torch.no_grad():
        g_forward = gflop(lambda: G(torch.randn(4, cfg.z_dim))) / 4
    assert r["train_gflop_per_image"] > 3 * g_forward
    assert "| tiny | 16² | 8 |" in (tmp_path / "train_cost-cpu.md").read_text()


def test_optimizer_step_times_each_update_before_and_now(tmp_path):
    subprocess.run([sys.executable, str(BENCH / "optimizer_step.py"), "--presets", "tiny", "--rounds", "1",
                    "--repeats", "2", "--device", "cpu", "--out", str(tmp_path)], check=True, capture_output=True,
                   text=True)
    rows = json.loads((tmp_path / "optimizer_step.json").read_text())["rows"]
    assert [r["update"] for r in rows] == ["G: check + Adam", "D: check + Adam", "G_ema: EMA of G"]
    assert all(r["ms"]["before"] > 0 and r["ms"]["now"] > 0 and r["params"] > 0 for r in rows)
    assert "| tiny | G: check + Adam |" in (tmp_path / "optimizer_step.md").read_text()
