"""`facesynth import`: NVIDIA's and rosinality's StyleGAN2 checkpoints, read without running them, computing
what NVIDIA's own code computes (reference outputs in ../shared/fixtures/official, made by that code)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from facesynth.errors import FacesynthError
from facesynth.importers import import_checkpoint
from facesynth.importers.fidelity import compare, summary
from facesynth.importers.rosinality import random_checkpoint

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "official"
OFFICIAL = ["pt-a-32px-skip", "pt-b-64px-paper256-fp16", "pt-c-32px-resnet", "pt-d-32px-orig-cond4", "tf-a-32px-skip"]
# Tolerances the issue sets (max abs, float32): ws 1e-5, images and D logits 1e-4.
TOL = {"ws": 1e-5, "image": 1e-4, "d_logits": 1e-4}


def _fixture(name: str) -> Path:
    path = FIXTURES / name
    if not path.is_file():
        pytest.skip(f"{path} is absent (../shared/fixtures/official holds NVIDIA-made checkpoints for development)")
    return path


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    out = tmp_path_factory.mktemp("imported")
    cache = {}

    def get(stem: str) -> Path:
        if stem not in cache:
            cache[stem] = import_checkpoint(_fixture(f"{stem}.pkl"), out / f"{stem}.safetensors", what="all",
                                            quiet=True)
        return cache[stem]
    return get


@pytest.mark.realdata
@pytest.mark.parametrize("stem", OFFICIAL)
def test_reproduces_nvidia_outputs(stem, imported):
    diffs = compare(imported(stem), _fixture(f"{stem}.ref.npz"))
    worst = summary(diffs)
    assert {"d_const", "d_none", "d_const_batch4", "gtrain_img_const", "img_none"} <= set(diffs)
    for key, tol in TOL.items():
        assert worst[key] <= tol, (key, worst[key], diffs)


@pytest.mark.realdata
def test_every_tensor_matters(imported, tmp_path):
    """The comparison can fail: a model whose one noise strength is changed no longer matches."""
    from safetensors.torch import load_file, save_file

    path = imported("pt-a-32px-skip")
    tensors = load_file(str(path))
    from facesynth.checkpoints import safetensors_header

    meta, _ = safetensors_header(path)
    key = "G_ema.synthesis.blocks.1.conv0.noise.strength"
    tensors[key] = tensors[key] * 1.01
    bad = tmp_path / "bad.safetensors"
    save_file(tensors, str(bad), metadata=meta)
    assert summary(compare(bad, _fixture("pt-a-32px-skip.ref.npz")))["image"] > 1e-4


@pytest.mark.realdata
def test_generator_only_import_draws_the_same(imported, tmp_path):
    from facesynth.checkpoints import load_generator, read_model

    full = imported("pt-b-64px-paper256-fp16")
    small = import_checkpoint(_fixture("pt-b-64px-paper256-fp16.pkl"), tmp_path / "g.safetensors", quiet=True)
    cfg, tensors, _ = read_model(small)
    assert {k.split(".")[0] for k in tensors} == {"G_ema"}
    assert cfg.conv_clamp == 256 and cfg.resolution == 64 and cfg.w_dim == 128
    z = torch.randn(2, 512, generator=torch.Generator().manual_seed(1))
    a = load_generator(full)(z, noise_mode="const")
    b = load_generator(small)(z, noise_mode="const")
    assert torch.equal(a, b)


@pytest.mark.realdata
def test_conditional_model_needs_a_class(imported):
    from facesynth.checkpoints import load_generator

    G = load_generator(imported("pt-d-32px-orig-cond4"))
    z = torch.randn(1, 512)
    with pytest.raises(FacesynthError, match="--class"):
        G(z)
    G.select_class(2)
    one_hot = torch.nn.functional.one_hot(torch.tensor([2]), 4)
    assert torch.equal(G(z, noise_mode="const"), G(z, noise_mode="const", c=one_hot))
    with pytest.raises(FacesynthError, match="classes 0 to 3"):
        G.select_class(4)


@pytest.mark.realdata
@pytest.mark.parametrize("name", ["evil-persistence-src.pkl", "evil-reduce-exec.pkl", "evil-tf-build-src.pkl"])
def test_hostile_files_never_run(name, tmp_path, monkeypatch):
    """Each payload would create FACESYNTH_PWNED in the working folder; it is refused or imported inertly."""
    src = _fixture(name)
    monkeypatch.chdir(tmp_path)
    try:
        import_checkpoint(src, tmp_path / "out.safetensors", quiet=True)
        outcome = "imported"
    except FacesynthError as e:
        outcome = str(e)
    assert not (tmp_path / "FACESYNTH_PWNED").exists()
    if name == "evil-reduce-exec.pkl":
        assert "builtins.exec" in outcome and str(src) in outcome
    else:
        assert outcome == "imported"


@pytest.mark.realdata
def test_cli_import_then_generate(tmp_path):
    """A new user's path: import, then draw with --ckpt (and --class for a conditional model)."""
    env = {**os.environ, "FACESYNTH_DEVICE": "cpu"}
    model = tmp_path / "m.safetensors"
    run = lambda *a: subprocess.run([sys.executable, "-m", "facesynth", *a], capture_output=True, text=True,  # noqa
                                    env=env, cwd=tmp_path)
    r = run("import", str(_fixture("pt-d-32px-orig-cond4.pkl")), "--out", str(model))
    assert r.returncode == 0, r.stderr
    r = run("generate", "--ckpt", str(model), "--seeds", "0-3", "--out", "g.png")
    assert r.returncode == 2 and "--class" in r.stderr and "Traceback" not in r.stderr
    r = run("generate", "--ckpt", str(model), "--seeds", "0-3", "--class", "1", "--out", "g.png")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "g.png").is_file()
    source = json.loads(__import__("facesynth.checkpoints", fromlist=["x"]).safetensors_header(model)[0]
                        ["source"])
    assert source["format"] == "stylegan2-ada-pytorch" and len(source["sha256"]) == 64


# --------------------------------------------------------------------------- runs everywhere (no ../shared)

def test_rosinality_checkpoint_imports(tmp_path):
    from facesynth.checkpoints import load_generator, read_model

    ckpt = random_checkpoint()
    src = tmp_path / "550000.pt"
    torch.save(ckpt, src)
    out = import_checkpoint(src, tmp_path / "r.safetensors", what="all", quiet=True)
    cfg, tensors, _ = read_model(out)
    assert (cfg.resolution, cfg.w_dim, cfg.mapping_layers, cfg.channel_base) == (16, 32, 2, 16384)
    assert {k.split(".")[0] for k in tensors} == {"G", "D", "G_ema"}
    G = load_generator(out)
    assert torch.equal(G.mapping.w_avg, ckpt["latent_avg"])
    assert torch.equal(G.synthesis.blocks[1].conv0.conv.weight, ckpt["g_ema"]["convs.0.conv.weight"][0])
    img = G(torch.randn(2, 32), noise_mode="const")
    assert img.shape == (2, 3, 16, 16) and torch.isfinite(img).all()


def test_rosinality_without_mean_w_gets_one(tmp_path):
    from facesynth.checkpoints import load_generator

    src = tmp_path / "g.pt"
    torch.save({"g_ema": random_checkpoint(with_d=False, latent_avg=False)["g_ema"]}, src)
    G = load_generator(import_checkpoint(src, tmp_path / "r.safetensors", quiet=True))
    assert G.mapping.w_avg.abs().sum() > 0
    with pytest.raises(FacesynthError, match="holds no G or D|holds no D"):
        import_checkpoint(src, tmp_path / "all.safetensors", what="all", quiet=True)


def test_refuses_what_it_cannot_compute(tmp_path):
    ckpt = random_checkpoint(with_d=False)
    ckpt["g_ema"]["convs.0.conv.blur.kernel"] = torch.ones(4, 4)
    src = tmp_path / "odd.pt"
    torch.save(ckpt, src)
    with pytest.raises(FacesynthError, match=r"odd\.pt: cannot import: .*blur kernel"):
        import_checkpoint(src, tmp_path / "x.safetensors", quiet=True)


def test_refuses_other_files_with_one_line(tmp_path):
    src = tmp_path / "other.pt"
    torch.save({"model": {"w": torch.zeros(2)}}, src)
    with pytest.raises(FacesynthError, match="not a StyleGAN2 checkpoint facesynth knows"):
        import_checkpoint(src, tmp_path / "x.safetensors", quiet=True)
    with pytest.raises(FacesynthError, match="is the file being imported"):
        import_checkpoint(src, src, quiet=True)
    with pytest.raises(FacesynthError, match="no such file"):
        import_checkpoint(tmp_path / "missing.pkl", tmp_path / "x.safetensors", quiet=True)
    with pytest.raises(FacesynthError, match="empty path"):
        import_checkpoint(src, "", quiet=True)
    with pytest.raises(FacesynthError, match="is a folder"):
        import_checkpoint(src, tmp_path, quiet=True)


def _tf_as_rosinality(tf_pickle_path: Path) -> dict:
    """NVIDIA's TF fixture laid out as rosinality's convert_weight.py lays out TF weights (its conventions:
    [kh, kw, in, out] -> [1, out, in, kh, kw], up-sampling kernels flipped, style biases + 1, toRGB bias as
    [1, 3, 1, 1]), so its references test the rosinality path too."""
    from facesynth.importers.safe_pickle import read_pickle
    from facesynth.importers.tf_pickle import _variables

    tf_g, tf_d, tf_gs = read_pickle(tf_pickle_path)

    def generator(net):
        v = {k: torch.from_numpy(np.array(a, dtype=np.float32)) for k, a in _variables(net).items()}
        sd = {}
        n_mlp = len([k for k in v if k.startswith("mapping/Dense") and k.endswith("weight")])
        for i in range(n_mlp):
            sd[f"style.{i + 1}.weight"] = v[f"mapping/Dense{i}/weight"].T
            sd[f"style.{i + 1}.bias"] = v[f"mapping/Dense{i}/bias"]
        sd["input.input"] = v["synthesis/4x4/Const/const"]

        def modconv(src, dst, flip=False):
            w = v[f"{src}/weight"].permute(3, 2, 0, 1)[None]
            sd[f"{dst}.conv.weight"] = w.flip([3, 4]) if flip else w
            sd[f"{dst}.conv.modulation.weight"] = v[f"{src}/mod_weight"].T
            sd[f"{dst}.conv.modulation.bias"] = v[f"{src}/mod_bias"] + 1
            if f"{src}/noise_strength" in v:
                sd[f"{dst}.noise.weight"] = v[f"{src}/noise_strength"].reshape(1)
                sd[f"{dst}.activate.bias"] = v[f"{src}/bias"]
            else:
                sd[f"{dst}.bias"] = v[f"{src}/bias"].reshape(1, 3, 1, 1)

        modconv("synthesis/4x4/Conv", "conv1")
        modconv("synthesis/4x4/ToRGB", "to_rgb1")
        res = sorted({int(k.split("/")[1].split("x")[0]) for k in v if "Conv0_up" in k})
        for j, r in enumerate(res):
            modconv(f"synthesis/{r}x{r}/Conv0_up", f"convs.{2 * j}", flip=True)
            modconv(f"synthesis/{r}x{r}/Conv1", f"convs.{2 * j + 1}")
            modconv(f"synthesis/{r}x{r}/ToRGB", f"to_rgbs.{j}")
        for i in range(2 * len(res) + 1):
            sd[f"noises.noise_{i}"] = v[f"synthesis/noise{i}"]
        return sd, v["dlatent_avg"]

    g_ema, latent_avg = generator(tf_gs)
    d_vars = {k: torch.from_numpy(np.array(a, dtype=np.float32)) for k, a in _variables(tf_d).items()}
    top = max(int(k.split("x")[0]) for k in d_vars if "x" in k.split("/")[0])
    d = {"convs.0.0.weight": d_vars[f"{top}x{top}/FromRGB/weight"].permute(3, 2, 0, 1),
         "convs.0.1.bias": d_vars[f"{top}x{top}/FromRGB/bias"]}
    r, j = top, 1
    while r > 4:
        d[f"convs.{j}.conv1.0.weight"] = d_vars[f"{r}x{r}/Conv0/weight"].permute(3, 2, 0, 1)
        d[f"convs.{j}.conv1.1.bias"] = d_vars[f"{r}x{r}/Conv0/bias"]
        d[f"convs.{j}.conv2.1.weight"] = d_vars[f"{r}x{r}/Conv1_down/weight"].permute(3, 2, 0, 1)
        d[f"convs.{j}.conv2.2.bias"] = d_vars[f"{r}x{r}/Conv1_down/bias"]
        d[f"convs.{j}.skip.1.weight"] = d_vars[f"{r}x{r}/Skip/weight"].permute(3, 2, 0, 1)
        r, j = r // 2, j + 1
    d["final_conv.0.weight"] = d_vars["4x4/Conv/weight"].permute(3, 2, 0, 1)
    d["final_conv.1.bias"] = d_vars["4x4/Conv/bias"]
    d["final_linear.0.weight"], d["final_linear.0.bias"] = d_vars["4x4/Dense0/weight"].T, d_vars["4x4/Dense0/bias"]
    d["final_linear.1.weight"], d["final_linear.1.bias"] = d_vars["Output/weight"].T, d_vars["Output/bias"]
    return {"g_ema": g_ema, "g": generator(tf_g)[0], "d": d, "latent_avg": latent_avg}


@pytest.mark.realdata
def test_rosinality_layout_reproduces_nvidia_outputs(tmp_path):
    src = tmp_path / "tf-a.pt"
    torch.save(_tf_as_rosinality(_fixture("tf-a-32px-skip.pkl")), src)
    model = import_checkpoint(src, tmp_path / "r.safetensors", what="all", quiet=True)
    worst = summary(compare(model, _fixture("tf-a-32px-skip.ref.npz")))
    for key, tol in TOL.items():
        assert worst[key] <= tol, (key, worst)


def test_fine_tune_an_imported_model(face_dataset, tmp_path):
    """`--what all` then `train --init-from`: the run takes the imported networks' config and weights."""
    from facesynth import checkpoints as ckpt
    from facesynth.training.loop import TrainOptions, train

    src = tmp_path / "550000.pt"
    torch.save(random_checkpoint(16, 32, 2), src)
    model = import_checkpoint(src, tmp_path / "all.safetensors", what="all", quiet=True)
    out = tmp_path / "ft"
    train(TrainOptions(data=str(face_dataset), out=str(out), init_from=str(model), kimg=0.016, quiet=True,
                       tensorboard=False, grid_size=4, overrides={"batch": 8, "snapshot_kimg": 0.016}))
    cfg, tensors = ckpt.read_model_file(out)
    imported_cfg, imported = ckpt.read_model_file(model)
    # The run's own settings differ; a run from a trained model also drops the EMA ramp-up.
    assert cfg.replace(batch=32, snapshot_kimg=imported_cfg.snapshot_kimg, ema_rampup=imported_cfg.ema_rampup) == \
        imported_cfg
    assert cfg.ema_rampup is None
    # Trained: the weights moved from the imported ones, but not far (a few steps of fine-tuning).
    moved = (tensors["G.synthesis.blocks.1.conv0.conv.weight"] - imported["G.synthesis.blocks.1.conv0.conv.weight"])
    assert 0 < moved.abs().max() < 0.5
