"""Speed settings change how a step runs, not what it computes: bf16 top resolutions stay close to float32,
channels-last and compiled passes give the float32 run's weights, and the timed choice of the modulated
convolution leaves the run's random numbers alone."""

import json

import pytest
import torch

from facesynth import checkpoints as ckpt
from facesynth.errors import FacesynthError
from facesynth.nets import build_discriminator, build_generator, layers
from facesynth.presets import get_preset
from facesynth.training import performance
from facesynth.training.loop import TrainOptions, train


def _run(data, out, kimg=0.032, **kw):
    train(TrainOptions(data=str(data), out=str(out), preset="tiny", kimg=kimg, seed=5, quiet=True, tensorboard=False,
                       grid_size=4, history=False, resume="auto", overrides={"snapshot_kimg": 1.0, "r1_interval": 2},
                       **kw))
    return ckpt.read_safetensors(ckpt.resolve_checkpoint(out))


def _max_difference(a, b):
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


@pytest.fixture(scope="module")
def reference(face_dataset, tmp_path_factory):
    return _run(face_dataset, tmp_path_factory.mktemp("fp32") / "run")


def test_auto_settings_per_device_and_bad_values():
    cpu = performance.resolve(torch.device("cpu"))
    assert (cpu.precision, cpu.channels_last, cpu.compile, cpu.modconv) == ("fp32", False, False, "shared")
    with pytest.raises(FacesynthError, match="precision must be one of"):
        performance.resolve(torch.device("cpu"), precision="fp8")
    with pytest.raises(FacesynthError, match=">= 0"):
        performance.resolve(torch.device("cpu"), reduced_resolutions=-1)
    cfg = get_preset("stylegan2-256-paper")
    assert performance.reduced_precision_from(cfg, 4) == 32  # 32² to 256², as StyleGAN2-ADA's fp16 layers
    assert performance.reduced_precision_from(cfg, 0) > 256


def test_bf16_top_resolutions_compute_in_bf16_and_stay_close():
    cfg = get_preset("tiny").replace(resolution=32)
    torch.manual_seed(0)
    G, D = build_generator(cfg), build_discriminator(cfg)
    z = torch.randn(4, cfg.z_dim)
    ref_img = G(z, noise_mode="const")
    ref_logits = D(ref_img)
    performance.apply(performance.Performance(precision="bf16", reduced_resolutions=2), cfg, G, D)
    seen = {}

    def record(name):
        def hook(module, inputs, output):
            seen[name] = (module.resolution, output)
        return hook

    hooks = [m.register_forward_hook(record(name)) for name, m in list(G.named_modules()) + list(D.named_modules())
             if isinstance(m, layers.ReducedPrecision)]
    img = G(z, noise_mode="const")
    logits = D(img)
    for h in hooks:
        h.remove()
    dtypes = {name: (res, (o[0] if isinstance(o, tuple) else o).dtype) for name, (res, o) in seen.items()}
    assert all((dt == torch.bfloat16) == (res >= 16) for res, dt in dtypes.values()), dtypes
    assert img.dtype == torch.float32 and logits.dtype == torch.float32
    assert (img - ref_img).abs().max() < 0.1 and (img - ref_img).abs().mean() < 0.02
    assert (logits - ref_logits).abs().max() < 0.05
    assert all(p.dtype == torch.float32 for p in G.parameters())  # weights stay float32; only arithmetic drops


def test_bf16_training_keeps_float32_finite_weights(face_dataset, reference, tmp_path):
    w = _run(face_dataset, tmp_path / "bf16", precision="bf16")
    assert all(t.dtype == torch.float32 for t in w.values())
    assert all(torch.isfinite(t).all() for t in w.values())
    options = json.loads((tmp_path / "bf16" / "training_options.json").read_text())
    assert options["performance"]["precision"] == "bf16"


def test_channels_last_gives_the_same_weights_and_resumes(face_dataset, reference, tmp_path):
    _run(face_dataset, tmp_path / "cl", kimg=0.016, channels_last="on")
    w = _run(face_dataset, tmp_path / "cl", channels_last="on")
    assert _max_difference(reference, w) < 1e-4


def test_compiled_main_passes_give_the_same_weights(face_dataset, reference, tmp_path, monkeypatch):
    # The eager backend checks graph capture and the compiled/uncompiled split without a C++ build.
    monkeypatch.setenv("FACESYNTH_COMPILE_BACKEND", "eager")
    torch._dynamo.reset()
    w = _run(face_dataset, tmp_path / "compiled", compile=True)
    assert _max_difference(reference, w) < 1e-4


def test_timing_the_modconv_forms_leaves_the_random_numbers_alone():
    cfg = get_preset("tiny")
    G = build_generator(cfg)
    before = torch.get_rng_state()
    original = layers.MODCONV_FORM
    try:
        form = performance.choose_modconv(G, 4, cfg.z_dim, torch.device("cpu"), repeats=1)
        assert form in ("shared", "grouped") and layers.MODCONV_FORM == form
    finally:
        layers.MODCONV_FORM = original
    assert torch.equal(torch.get_rng_state(), before)
    assert all(p.grad is None for p in G.parameters())


def test_talking_heads_run_in_bf16_channels_last_and_compiled(tmp_path, monkeypatch):
    from test_animate import TINY, synthetic_clips

    from facesynth.animate.train import MetaTrainOptions, meta_train

    clips = synthetic_clips(tmp_path / "clips")

    def run(name, **speed):
        out = tmp_path / name
        meta_train(MetaTrainOptions(data=str(clips), out=str(out), steps=2, overrides=TINY, quiet=True, tick_steps=1,
                                    **speed))
        stats = [json.loads(line) for line in (out / "stats.jsonl").read_text().splitlines()]
        options = json.loads((out / "training_options.json").read_text())["performance"]
        return stats, options, ckpt.read_safetensors(ckpt.resolve_checkpoint(out))

    ref, options, _ = run("fp32")
    assert options == {"precision": "fp32", "channels_last": False, "compile": False}
    monkeypatch.setenv("FACESYNTH_COMPILE_BACKEND", "eager")
    torch._dynamo.reset()
    fast, options, _ = run("compiled", channels_last="on", compile=True)
    assert options == {"precision": "fp32", "channels_last": True, "compile": True}
    bf16, options, weights = run("bf16", precision="bf16")
    assert options["precision"] == "bf16"
    assert all(t.dtype == torch.float32 and torch.isfinite(t).all() for t in weights.values())
    for a, b, c in zip(ref, fast, bf16):
        for k in ("loss/G", "loss/D", "loss/pixel"):
            assert abs(a[k] - b[k]) <= 1e-4 * max(1.0, abs(a[k])), (k, a[k], b[k])
            assert abs(a[k] - c[k]) <= 0.05 * max(1.0, abs(a[k])), (k, a[k], c[k])  # bf16: 8 bits of mantissa
    assert ref[0]["loss/G"] != bf16[0]["loss/G"]  # the bf16 run really computed in bf16
    with pytest.raises(FacesynthError, match="precision must be one of"):
        run("bad", precision="fp16")
