import pickle
import subprocess
import sys

import pytest
import torch

from facesynth import checkpoints as ckpt
from facesynth.cli import main
from facesynth.training import snapshots
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
    points = snapshots.run_checkpoints(tiny_run)
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


# --------------------------------------------------------------------------- QA issue 23: what the CLI accepts

def _usage_error(argv, capsys) -> str:
    """``main(argv)`` must stop at parse time with argparse's usage error (exit 2): no traceback, nothing run."""
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.strip().splitlines()[-1]


def _leaf_parsers():
    """(command, parser) of every command and animate subcommand."""
    import argparse

    from facesynth.cli import build_parser

    def subparsers(p):
        return next((a.choices for a in p._actions if isinstance(a, argparse._SubParsersAction)), {})

    for name, p in subparsers(build_parser()).items():
        inner = subparsers(p)
        yield from ((f"{name} {n}", q) for n, q in inner.items()) if inner else [(name, p)]


NOT_YET: set[str] = set()  # commands whose options are not yet range-checked (none)


@pytest.mark.parametrize("argv, option", [
    (["generate", "--trunc", "1e308"], "--trunc"),
    (["generate", "--trunc", "nan"], "--trunc"),
    (["generate", "--trunc", "inf"], "--trunc"),
    (["generate", "--batch", "0"], "--batch"),
    (["generate", "--cols", "-3"], "--cols"),
    (["generate", "--seeds", "99999999999999999999"], "--seeds"),
    (["generate", "--seeds", "4294967290-4294967299"], "--seeds"),
    (["generate", "--trunc-cutoff", "1.5"], "--trunc-cutoff"),
    (["train", "--data", "d", "--kimg", "inf"], "--kimg"),
    (["train", "--data", "d", "--workers", "-1"], "--workers"),
    (["train", "--data", "d", "--seed", "99999999999999999999"], "--seed"),
    (["train", "--data", "d", "--lr", "nan"], "--lr"),
    (["train", "--data", "d", "--mixing", "2"], "--mixing"),
    (["noise", "--seed", "-1"], "--seed"),
    (["interpolate", "--seconds", "1e400"], "--seconds"),
    (["serve", "--port", "70000"], "--port"),
    (["animate", "eval", "--ckpt", "c", "--data", "d", "--finetune-steps", "-2"], "--finetune-steps"),
])
def test_numbers_out_of_range_are_usage_errors(argv, option, tmp_path, capsys):
    """QA issue 23 #7: these were tracebacks (or, for --trunc nan/inf, an all-black grid and exit 0)."""
    if argv[0] in ("generate", "train"):
        argv = argv + ["--out", str(tmp_path / "o.png")]
    line = _usage_error(argv, capsys)
    assert line.startswith(f"facesynth {' '.join(argv[:2]) if argv[0] == 'animate' else argv[0]}: error: "
                           f"argument {option}"), line
    assert not list(tmp_path.iterdir())


def test_every_numeric_option_is_range_checked():
    for command, parser in _leaf_parsers():
        if command in NOT_YET:
            continue
        for action in parser._actions:
            assert action.type not in (int, float), f"{command} {action.option_strings}: unchecked {action.type}"


# (Short runs, so that without the check each would finish quickly, writing into the current folder.)
@pytest.mark.parametrize("argv", [
    ["generate", "--seeds", "1", "--out", ""],
    ["generate", "--seeds", "1", "--out", "x.png", "--ckpt", ""],
    ["train", "--data", "{data}", "--out", "", "--preset", "tiny", "--kimg", "0.008", "--quiet"],
    ["train", "--data", "", "--out", "r"],
    ["train", "--data", "{data}", "--out", "r", "--resume", " "],
    ["mix", "--rows", "1", "--cols", "2", "--out", ""],
    ["noise", "--draws", "1", "--out", ""],
    ["interpolate", "--seeds", "1,2", "--seconds", "0.5", "--fps", "2", "--out", ""],
    ["project", "--target", "{data}", "--out", ""],
    ["export", "--ckpt", "{data}", "--out", ""],
    ["import", "", "--out", "x.safetensors"],
    ["dataset", "{data}", "", "--resolution", "16"],
    ["align", "{data}", ""],
    ["animate", "prepare", "{data}", ""],
    ["animate", "run", "--ckpt", "{data}", "--driver", "{data}", "--out", ""],
    ["animate", "finetune", "--ckpt", "{data}", "--images", "{data}", "--out", ""],
    ["animate", "train", "--data", "{data}", "--out", "", "--steps", "1"],
    ["animate", "eval", "--ckpt", "{data}", "--data", "{data}", "--out", ""],
    ["demo", "--data", "", "--out", "d", "--minutes", "0.01"],
])
def test_empty_paths_are_usage_errors(argv, face_dataset, tmp_path, monkeypatch, capsys):
    """QA issue 23 #6: `generate --out ""` and `train --out ""` wrote into the current folder."""
    monkeypatch.chdir(tmp_path)
    line = _usage_error([a.format(data=face_dataset) for a in argv], capsys)
    assert "must not be empty" in line, line
    assert not list(tmp_path.iterdir())


def test_outputs_onto_their_own_inputs_are_refused(tiny_run, face_dataset, tmp_path, capsys):
    """QA issue 23 #5: `dataset src.zip src.zip` replaced its input; `export` over the snapshot it read left a
    G-only file that --resume refused."""
    import os
    import shutil

    src = tmp_path / "src.zip"
    shutil.copy(face_dataset, src)
    snap = tmp_path / "run" / ckpt.list_snapshots(tiny_run)[-1].name
    shutil.copytree(ckpt.list_snapshots(tiny_run)[-1], snap)
    model = snap / "model.safetensors"
    os.link(model, tmp_path / "hard-link.safetensors")
    photo = tmp_path / "face.png"
    photo.write_bytes(b"not decoded: refused before reading")
    before = {p: p.read_bytes() for p in (src, model, photo)}
    for argv in (["dataset", str(src), str(src), "--resolution", "16"],
                 ["dataset", str(src), str(tmp_path / "." / "src.zip"), "--resolution", "16"],
                 ["export", "--ckpt", str(model), "--out", str(model)],
                 ["export", "--ckpt", str(snap), "--out", str(model)],
                 ["export", "--ckpt", str(snap.parent), "--out", str(tmp_path / "hard-link.safetensors")],
                 ["import", str(model), "--out", str(model)],
                 ["generate", "--ckpt", str(snap), "--seeds", "1", "--out", str(model)],
                 ["align", str(photo), str(photo)],
                 ["mix", "--ckpt", str(snap), "--rows", f"1,{photo}", "--cols", "2", "--out", str(photo)],
                 ["animate", "run", "--ckpt", str(tmp_path / "none"), "--driver", str(photo), "--out", str(photo)]):
        assert main(argv) == 2, argv
        assert "would overwrite the input" in _err(capsys), argv
    assert all(p.read_bytes() == data for p, data in before.items())
    assert any(k.startswith("D.") for k in ckpt.read_model(snap)[1])  # still a full snapshot, resumable
    assert main(["export", "--ckpt", str(snap), "--out", str(tmp_path / "e.safetensors")]) == 0  # elsewhere: fine


def test_a_config_too_large_to_build_is_refused_with_its_size(face_dataset, tmp_path):
    """QA issue 23 #3: a config within every limit of validate() but an 11.8 GB generator died in the
    allocator.  Run in a process limited to 8 GiB of address space, so that without the check it fails
    there instead of filling this machine's memory."""
    import resource

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (8 * 2**30, resource.RLIM_INFINITY))

    argv = ["train", "--data", str(face_dataset), "--out", str(tmp_path / "r"), "--kimg", "0.008", "--quiet",
            "--set", "resolution=4096", "--set", "channel_max=4096", "--set", "channel_base=16777216"]
    proc = subprocess.run([sys.executable, "-m", "facesynth", *argv], capture_output=True, text=True, timeout=300,
                          preexec_fn=limit)
    assert proc.returncode == 2, proc.stderr[-2000:]
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("facesynth train: error: config ") and "GiB" in line and "Traceback" not in proc.stderr
    assert not ckpt.list_snapshots(tmp_path / "r")
    from facesynth.nets import MAX_NETWORK_BYTES, check_network_size  # after the run: it is what fails without
    from facesynth.presets import PRESETS

    sizes = {name: check_network_size(cfg) for name, cfg in PRESETS.items()}  # the same estimate passes them all
    assert max(sizes.values()) < MAX_NETWORK_BYTES / 8 and sizes["stylegan2-1024-paper"] == max(sizes.values())


def test_every_command_that_computes_takes_threads(tiny_run, tmp_path, monkeypatch, capsys):
    """QA issue 23 #20: only train and animate train had --threads."""
    for command, parser in _leaf_parsers():
        if command not in NOT_YET | {"presets"}:
            assert any("--threads" in a.option_strings for a in parser._actions), command
    calls = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    assert main(["generate", "--ckpt", str(tiny_run), "--seeds", "1", "--out", str(tmp_path / "g.png"),
                 "--threads", "2"]) == 0
    assert calls == [2]
    assert "--threads" in _usage_error(["dataset", "a", "b.zip", "--resolution", "16", "--threads", "0"], capsys)


def test_export_records_the_framing_a_run_left_out(tiny_run, tmp_path, capsys):
    """A run trained without --framing says "ffhq"; export can record how its faces were really cropped, which
    align and project then follow, and the weights stay the same."""
    plain, framed = tmp_path / "plain.safetensors", tmp_path / "framed.safetensors"
    assert main(["export", "--ckpt", str(tiny_run), "--out", str(plain)]) == 0
    assert main(["export", "--ckpt", str(tiny_run), "--out", str(framed), "--framing", "utkface"]) == 0
    assert ckpt.load_generator(plain).cfg.framing == "ffhq"
    assert ckpt.load_generator(framed).cfg.framing == "utkface"
    a, b = ckpt.read_model(plain)[1], ckpt.read_model(framed)[1]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(SystemExit) as info:
        main(["export", "--ckpt", str(tiny_run), "--out", str(framed), "--framing", "celeba"])
    assert info.value.code == 2 and "invalid choice" in _err(capsys)
