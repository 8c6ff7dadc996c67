"""Data-parallel training through torchrun (gloo on CPU): W processes train as one process with the same
global batch would, and a run resumes with a different number of processes.

Weights are compared after a few steps: every rank draws exactly the samples one process would, so the only
differences are floating-point rounding (sums over 4 + 4 samples instead of 8), far below one Adam step
(~lr = 2.5e-3 per weight).  Over many steps GAN training amplifies rounding as it would between thread counts.
"""

import json
import os
import subprocess
import sys

import pytest
import torch

from facesynth import checkpoints as ckpt
from facesynth.animate.train import MetaTrainOptions, meta_train
from facesynth.training.loop import TrainOptions, train

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not built in")

# Path length and R1 every other step, so that both regularisers and their sharded draws take part.
OVERRIDES = {"r1_interval": 2, "pl_weight": 2.0, "pl_interval": 2}
FLAGS = ["--seed", "3", "--quiet"]
TOLERANCE = 1e-4  # 1/25 of one Adam step


def _settings(overrides: dict) -> list[str]:
    return [x for k, v in overrides.items() for x in ("--set", f"{k}={json.dumps(v)}")]


def _torchrun(nproc: int, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "facesynth", *args, *FLAGS]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                         env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1"))
    if check:
        assert res.returncode == 0, f"torchrun failed:\n{res.stdout[-3000:]}\n{res.stderr[-6000:]}"
    return res


def _train_gan(nproc, data, out, kimg):
    if nproc == 0:  # in this process, no torchrun
        train(TrainOptions(data=str(data), out=str(out), preset="tiny", kimg=kimg, seed=3, quiet=True,
                           tensorboard=False, grid_size=4, history=False, resume="auto",
                           overrides={"snapshot_kimg": 1.0, **OVERRIDES}))
    else:
        _torchrun(nproc, "train", "--data", str(data), "--out", str(out), "--kimg", str(kimg), "--preset", "tiny",
                  "--snap", "1", "--no-history", "--resume", "auto", *_settings(OVERRIDES))


def _assert_same_weights(a_dir, b_dir):
    a, b = (ckpt.read_safetensors(ckpt.resolve_checkpoint(d)) for d in (a_dir, b_dir))
    assert set(a) == set(b)
    worst, name = max(((a[k].float() - b[k].float()).abs().max().item(), k) for k in a)
    assert worst <= TOLERANCE, f"largest difference {worst:.3g} in {name}"


def _state(run):
    return json.loads((ckpt.list_snapshots(run)[-1] / "state.json").read_text())


@pytest.fixture(scope="module")
def single_run(face_dataset, tmp_path_factory):
    """The reference: one process, 4 steps of the global batch 8."""
    out = tmp_path_factory.mktemp("single") / "run"
    _train_gan(0, face_dataset, out, 0.032)
    return out


def test_two_processes_train_as_one(face_dataset, single_run, tmp_path):
    out = tmp_path / "ddp"
    _train_gan(2, face_dataset, out, 0.032)
    _assert_same_weights(single_run, out)
    state = _state(out)
    assert state["images_seen"] == 32 and state["step"] == 4
    # Rank 0 alone writes: one snapshot, one log line per tick, the options record the process count.
    assert json.loads((out / "training_options.json").read_text())["processes"] == 2
    lines = [json.loads(x) for x in (out / "stats.jsonl").read_text().splitlines()]
    assert len(lines) == 1 and lines[0]["kimg"] == pytest.approx(0.032)
    assert [s.name for s in ckpt.list_snapshots(out)] == ["snapshot-000000032"]


@pytest.mark.parametrize("first,then", [(2, 0), (0, 2)], ids=["2-then-1", "1-then-2"])
def test_resume_with_a_different_number_of_processes(face_dataset, single_run, tmp_path, first, then):
    out = tmp_path / "run"
    _train_gan(first, face_dataset, out, 0.016)
    assert _state(out)["images_seen"] == 16
    torch.manual_seed(12345)  # the snapshot, not this process's RNG, decides what comes next
    _train_gan(then, face_dataset, out, 0.032)
    assert _state(out)["images_seen"] == 32
    _assert_same_weights(single_run, out)


def test_batch_must_split_evenly_across_processes(face_dataset, tmp_path):
    res = _torchrun(3, "train", "--data", str(face_dataset), "--out", str(tmp_path / "r"), "--kimg", "0.01",
                    "--preset", "tiny", check=False)
    assert res.returncode != 0
    assert "batch at 16x16 (8) must be divisible by the number of processes (3)" in res.stderr


def test_talking_heads_train_data_parallel(tmp_path):
    from test_animate import TINY, synthetic_clips

    from facesynth.animate.episodes import EpisodeSampler, load_videos
    from facesynth.animate.model import load_run

    clips = synthetic_clips(tmp_path / "clips")
    tiny = {**TINY, "batch": 4, "snapshot_steps": 1}
    meta_train(MetaTrainOptions(data=str(clips), out=str(tmp_path / "one"), steps=3, seed=3, overrides=tiny,
                                quiet=True))
    _torchrun(2, "animate", "train", "--data", str(clips), "--out", str(tmp_path / "two"), "--steps", "3",
              *_settings(tiny))
    assert _state(tmp_path / "two")["step"] == 3
    # Compared as functions: conv biases ahead of instance norm get no gradient but rounding, which Adam
    # turns into full-size steps of no consequence, so weights alone would differ where outputs do not.
    episode = EpisodeSampler(load_videos(clips, 32, quiet=True), 2, seed=0).sample(6)
    outputs = []
    for run in ("one", "two", "one/snapshot-000000008"):
        _, nets, _ = load_run(tmp_path / run)
        with torch.no_grad():
            e = nets["E"](episode["frames"], episode["drawings"])
            image = nets["G"](episode["target_drawing"], nets["G"].psi(e))
            score = nets["D"](episode["target"], episode["target_drawing"], episode["video"])[0]
        outputs.append((image, score))
    (image1, score1), (image2, score2), (image_before, score_before) = outputs
    torch.testing.assert_close(image2, image1, rtol=0, atol=1e-4)
    torch.testing.assert_close(score2, score1, rtol=0, atol=2e-3)
    # ... a margin far below what one training step changes.
    assert (image_before - image1).abs().max() > 0.05 and (score_before - score1).abs().max() > 5e-3
