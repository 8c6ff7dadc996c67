import pickle
import subprocess
import sys

import pytest
import torch

from facesynth.cli import main
from facesynth.training import checkpoint as ckpt
from facesynth.training.loop import TrainOptions, train


def test_generate_grid_and_folder(tiny_run, tmp_path):
    assert main(["generate", "--ckpt", str(tiny_run), "--seeds", "0-5", "--trunc", "0.7",
                 "--out", str(tmp_path / "g.png")]) == 0
    assert (tmp_path / "g.png").stat().st_size > 0
    snap = ckpt.list_snapshots(tiny_run)[-1]
    assert main(["generate", "--ckpt", str(snap / "model.safetensors"), "--seeds", "3,9",
                 "--out", str(tmp_path / "dir")]) == 0
    assert sorted(p.name for p in (tmp_path / "dir").iterdir()) == ["seed0003.png", "seed0009.png"]


def test_generate_reads_the_checkpoint_from_the_environment(tiny_run, tmp_path, monkeypatch):
    monkeypatch.setenv("FACESYNTH_CKPT", str(tiny_run))
    assert main(["generate", "--seeds", "1", "--out", str(tmp_path / "e.png")]) == 0


def test_device_auto_follows_the_environment(tiny_run, tmp_path, monkeypatch, capsys):
    from facesynth.util.device import pick_device

    monkeypatch.setenv("FACESYNTH_DEVICE", "cpu")
    assert pick_device("auto") == torch.device("cpu") and pick_device("cpu") == torch.device("cpu")
    monkeypatch.setenv("FACESYNTH_DEVICE", "tpu9")
    assert main(["generate", "--ckpt", str(tiny_run), "--seeds", "1", "--out", str(tmp_path / "d.png")]) == 2
    assert "$FACESYNTH_DEVICE: unknown device 'tpu9'" in _err(capsys)
    # --device given on the command line wins over the environment.
    assert main(["generate", "--ckpt", str(tiny_run), "--seeds", "1", "--out", str(tmp_path / "d.png"),
                 "--device", "cpu"]) == 0
    if not torch.cuda.is_available():
        monkeypatch.setenv("FACESYNTH_DEVICE", "cuda")
        assert main(["generate", "--ckpt", str(tiny_run), "--seeds", "1", "--out", str(tmp_path / "d.png")]) == 2
        assert "$FACESYNTH_DEVICE asks for cuda, but PyTorch sees no CUDA GPU here" in _err(capsys)


def _err(capsys):
    return capsys.readouterr().err.strip().splitlines()[-1]


def test_missing_checkpoint_is_one_clear_line(tmp_path, capsys, monkeypatch):
    import facesynth.models

    monkeypatch.delenv("FACESYNTH_CKPT", raising=False)
    monkeypatch.setattr(facesynth.models, "DEFAULT_MODEL", tmp_path / "absent.safetensors")
    assert main(["generate", "--seeds", "1", "--out", str(tmp_path / "x.png")]) == 2
    assert "no checkpoint" in _err(capsys)


def test_pickle_checkpoints_are_refused_without_unpickling(tmp_path, capsys):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    for name in ("model.pt", "model.safetensors"):
        path = tmp_path / name
        path.write_bytes(pickle.dumps(Evil()))
        assert main(["generate", "--ckpt", str(path), "--seeds", "1", "--out", str(tmp_path / "x.png")]) == 2
        msg = _err(capsys)
        assert name in msg and ("pickle" in msg or "safetensors" in msg)
    assert not marker.exists()


def test_wrong_kind_of_safetensors_is_refused(tmp_path, capsys):
    from safetensors.torch import save_file

    path = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(path), metadata={"kind": "something-else"})
    assert main(["generate", "--ckpt", str(path), "--out", str(tmp_path / "x.png")]) == 2
    assert "not a facesynth GAN checkpoint" in _err(capsys)


def test_absurd_config_in_checkpoint_is_refused(tiny_run, tmp_path, capsys):
    import json

    from safetensors.torch import load_file, save_file

    src = ckpt.resolve_checkpoint(tiny_run)
    cfg = json.loads((src.parent / "config.json").read_text())
    cfg["resolution"] = 10**9
    bad = tmp_path / "bad.safetensors"
    save_file(load_file(str(src)), str(bad), metadata={"kind": ckpt.KIND, "config": json.dumps(cfg)})
    assert main(["generate", "--ckpt", str(bad), "--out", str(tmp_path / "x.png")]) == 2
    assert "resolution" in _err(capsys)


def test_unwritable_output_is_a_clear_error(tiny_run, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["generate", "--ckpt", str(tiny_run), "--seeds", "1", "--out", str(blocker / "sub" / "g.png")]) == 2
    assert "cannot write" in _err(capsys)
    assert blocker.read_text() == "x"


def test_train_bad_inputs(face_dataset, tmp_path, capsys):
    assert main(["train", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "r"), "--preset", "tiny"]) == 2
    assert "missing: no such file" in _err(capsys)
    assert main(["train", "--data", str(face_dataset), "--out", str(tmp_path / "r"), "--preset", "nope"]) == 2
    assert "unknown preset 'nope'" in _err(capsys)
    assert main(["dataset", str(face_dataset), str(tmp_path / "o.zip"), "--resolution", "48"]) == 2
    assert "power of two" in _err(capsys)


def test_console_script_runs():
    out = subprocess.run([sys.executable, "-m", "facesynth", "presets"], capture_output=True, text=True, check=True)
    assert "stylegan2-64-cpu" in out.stdout and "tiny" in out.stdout


def test_demo_runs_on_the_bundled_lfw_faces(tmp_path):
    pytest.importorskip("skimage", reason="the demo's fallback faces come from scikit-image")
    from facesynth.demo import lfw_faces_array, run_demo

    faces = lfw_faces_array(tmp_path / "lfw.npy")
    grid = run_demo(tmp_path / "demo", data=faces, minutes=0.05)
    assert grid.is_file() and (tmp_path / "demo" / "run" / "latest.json").is_file()


def test_metrics_over_every_point_of_a_run(tiny_run, face_dataset, tmp_path, capsys):
    import json

    log = tmp_path / "m.jsonl"
    assert main(["metrics", "--ckpt", str(tiny_run), "--all", "--data", str(face_dataset), "--metrics", "swd",
                 "--num", "16", "--out", str(log), "--quiet"]) == 0
    points = ckpt.run_checkpoints(tiny_run)
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    assert len(lines) == len(points) >= 2
    assert [x["kimg"] for x in lines] == [n / 1000 for n, _ in points]
    printed = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert all("swd16_avg" in x for x in printed)


def test_training_computes_metrics_at_each_snapshot(face_dataset, tmp_path):
    import json

    out = tmp_path / "r"
    train(TrainOptions(data=str(face_dataset), out=str(out), preset="tiny", kimg=0.032, quiet=True,
                       tensorboard=False, grid_size=4, metrics="swd16", overrides={"snapshot_kimg": 0.016}))
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [x["kimg"] for x in lines] == [0.016, 0.032]
    assert all(x["metric"] == "swd16" and x["results"]["swd16_avg"] > 0 for x in lines)


def test_training_refuses_unknown_metrics_before_training(face_dataset, tmp_path, capsys):
    assert main(["train", "--data", str(face_dataset), "--out", str(tmp_path / "r"), "--preset", "tiny",
                 "--metrics", "fidd10k"]) == 2
    assert "unknown metric 'fidd10k'" in _err(capsys)
    assert not (tmp_path / "r" / "latest.json").exists()
