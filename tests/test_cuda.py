"""On a CUDA GPU: training steps never wait for the device, the automatic speed settings (bf16 top resolutions,
channels-last, the timed form of the modulated convolution, optionally compiled) train to finite float32 weights,
a run resumes on the GPU, and a checkpoint trained there draws the same faces on the CPU.

Skipped where PyTorch sees no CUDA GPU. The rest of the suite runs on the CPU on every machine (conftest.py).
"""

import itertools
import json

import pytest
import torch
from test_animate import TINY, synthetic_clips
from test_distributed import _torchrun
from test_growth import tiny_growing

from facesynth import checkpoints as ckpt
from facesynth.data.loader import batch_iterator
from facesynth.presets import PRESETS
from facesynth.training.loop import Trainer, TrainOptions, train

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="PyTorch sees no CUDA GPU here")]

BF16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def _steps_without_host_sync(step, batches, steps: int = 4) -> list[dict]:
    """``steps`` calls of ``step`` after two warm-up ones, failing on any call that makes the host wait for the
    GPU (a blocking copy, ``.item()``, a branch on a GPU value)."""
    for _ in range(2):  # kernel selection, the allocators and pinned buffers settle first
        step(next(batches))
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        stats = [step(next(batches)) for _ in range(steps)]
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return stats


def _all_finite(stats: list[dict]) -> bool:
    return all(torch.isfinite(v).all() for s in stats for v in s.values())


@pytest.mark.parametrize("arch", ["stylegan2", "progan"])
def test_a_training_step_never_waits_for_the_gpu(arch, face_dataset, tmp_path, monkeypatch):
    # StyleGAN2 with R1 and path length every other step; ProGAN (gradient penalty) inside a fade-in.
    extra = {"pl_weight": 2.0, "pl_interval": 2} if arch == "stylegan2" else {}
    cfg = tiny_growing(arch, r1_interval=2, fade_kimg=1.0, **extra)
    monkeypatch.setitem(PRESETS, cfg.name, cfg)
    trainer = Trainer(TrainOptions(data=str(face_dataset), out=str(tmp_path / "run"), preset=cfg.name, device="cuda",
                                   quiet=True, tensorboard=False))
    assert trainer.perf.precision == ("bf16" if BF16 else "fp32") and trainer.perf.channels_last
    assert trainer.perf.modconv in ("shared", "grouped")
    fade = [p for p in trainer.schedule.phases if p.kind == "fade"][-1]
    trainer._set_growth(trainer.schedule.at(fade.start + 64))
    assert 0 < trainer.growth.alpha < 1
    batches = batch_iterator(trainer.dataset, trainer.growth.batch, 0, resolution=trainer.growth.resolution)
    stats = _steps_without_host_sync(trainer.train_step, batches)
    assert _all_finite(stats)
    if arch == "stylegan2":
        assert sum("loss/pl" in s for s in stats) == 2 and sum("loss/r1" in s for s in stats) == 2


@pytest.mark.parametrize("compile", [False, True], ids=["eager", "compiled"])
def test_gpu_settings_train_resume_and_the_checkpoint_draws_alike_on_the_cpu(compile, face_dataset, tmp_path):
    out = tmp_path / "run"
    for kimg in (0.016, 0.032):  # the second run resumes: Adam's state goes back onto the GPU
        train(TrainOptions(data=str(face_dataset), out=str(out), preset="tiny", kimg=kimg, seed=5, device="cuda",
                           compile=compile, quiet=True, tensorboard=False, grid_size=4, history=False,
                           resume="auto", overrides={"r1_interval": 2, "snapshot_kimg": 0.016}))
    assert json.loads((ckpt.list_snapshots(out)[-1] / "state.json").read_text())["images_seen"] == 32
    options = json.loads((out / "training_options.json").read_text())["performance"]
    assert options["precision"] == ("bf16" if BF16 else "fp32")
    assert options["channels_last"] and options["compile"] == compile
    weights = ckpt.read_safetensors(ckpt.resolve_checkpoint(out))
    assert all(t.dtype == torch.float32 and torch.isfinite(t).all() for t in weights.values() if t.is_floating_point())
    z = torch.randn(8, PRESETS["tiny"].z_dim, generator=torch.Generator().manual_seed(0))
    images = {}
    for device in ("cuda", "cpu"):
        G = ckpt.load_generator(out, device)
        with torch.no_grad():
            images[device] = G(z.to(device), noise_mode="const").cpu()
    # TF32 convolutions on the GPU: close, not bit-equal.
    assert (images["cuda"] - images["cpu"]).abs().max() < 0.02


def test_talking_heads_step_never_waits_for_the_gpu(tmp_path):
    from facesynth.animate.train import MetaTrainer, MetaTrainOptions

    clips = synthetic_clips(tmp_path / "clips")
    trainer = MetaTrainer(MetaTrainOptions(data=str(clips), out=str(tmp_path / "run"), steps=8, overrides=TINY,
                                           quiet=True, device="cuda"))
    assert trainer.perf.precision == ("bf16" if BF16 else "fp32") and trainer.perf.channels_last
    batches = (trainer.sampler.sample(trainer.cfg.batch, 0, 1) for _ in itertools.count())
    assert _all_finite(_steps_without_host_sync(trainer.train_step, batches))


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="data-parallel over NCCL needs two CUDA GPUs")
def test_two_gpus_train_data_parallel_over_nccl(face_dataset, tmp_path):
    out = tmp_path / "ddp"
    _torchrun(2, "train", "--data", str(face_dataset), "--out", str(out), "--kimg", "0.032", "--preset", "tiny",
              "--snap", "1", "--no-history", "--device", "cuda")
    options = json.loads((out / "training_options.json").read_text())
    assert options["processes"] == 2 and options["device"].startswith("cuda")
    state = json.loads((ckpt.list_snapshots(out)[-1] / "state.json").read_text())
    assert state["images_seen"] == 32 and state["step"] == 4
    weights = ckpt.read_safetensors(ckpt.resolve_checkpoint(out))
    assert all(torch.isfinite(t).all() for t in weights.values() if t.is_floating_point())
