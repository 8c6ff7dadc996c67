"""Crash safety: training in a subprocess is killed with SIGKILL again and again — after random steps, in the
middle of writing a snapshot's files, just before a snapshot's rename — and resumed each time.  Each resume
must start from the last complete snapshot, and the run must end with the weights of an uninterrupted run."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from facesynth import checkpoints as ckpt
from facesynth.animate.train import MetaTrainOptions, meta_train
from facesynth.training import snapshots
from facesynth.training.loop import TrainOptions, train

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")

# The child process: trains (resuming), prints "step N" after every step, and on request kills itself
# with SIGKILL half-way through writing the Nth safetensors file (or the Nth history/ file), or just before
# renaming the Nth snapshot.
CHILD = textwrap.dedent("""
    import json, os, signal, sys
    spec = json.loads(sys.argv[1])
    from facesynth.training import snapshots  # the snapshot writers call its save_file

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    saves = {"n": 0, "history": 0}
    real_save = snapshots.save_file
    def save_file(tensors, filename, metadata=None):
        saves["n"] += 1
        in_history = os.path.basename(os.path.dirname(filename)) == snapshots.HISTORY_DIR
        saves["history"] += in_history
        real_save(tensors, filename, metadata=metadata)
        if saves["n"] == spec.get("kill_in_save") or (in_history and saves["history"] == spec.get("kill_in_history")):
            os.truncate(filename, os.path.getsize(filename) // 2)  # a torn file, then the power goes
            die()
    snapshots.save_file = save_file

    renames = {"n": 0}
    real_replace = os.replace
    def replace(src, dst):
        if os.path.basename(str(src)).startswith(".snapshot-"):
            renames["n"] += 1
            if renames["n"] == spec.get("kill_in_rename"):
                die()
        return real_replace(src, dst)
    os.replace = replace

    if spec["kind"] == "gan":
        from facesynth.training.loop import Trainer, TrainOptions, train as run
        Options, Runner = TrainOptions, Trainer
    else:
        from facesynth.animate.train import MetaTrainer, MetaTrainOptions, meta_train as run
        Options, Runner = MetaTrainOptions, MetaTrainer
    step = Runner.train_step
    def train_step(self, *args):
        out = step(self, *args)
        print("step", self.step, flush=True)
        return out
    Runner.train_step = train_step
    run(Options(**spec["options"]))
""")


def _latest(run: Path) -> str | None:
    snaps = ckpt.list_snapshots(run)
    return snaps[-1].name if snaps else None


def _run_until_killed(script: Path, spec: dict, kill_after_step: int | None) -> tuple[int, str]:
    """Start the child; SIGKILL it once it reports ``kill_after_step`` (if given).  Returns (rc, stderr)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, str(script), json.dumps(spec)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        for line in proc.stdout:
            if kill_after_step is not None and line.split() == ["step", str(kill_after_step)]:
                proc.send_signal(signal.SIGKILL)
                break
        proc.wait(timeout=300)
        return proc.returncode, proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()
        proc.stderr.close()


def _kill_and_resume(tmp_path: Path, kind: str, options: dict, faults: list[dict]) -> Path:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    run = Path(options["out"])
    for fault in faults:
        before = _latest(run)
        spec = {"kind": kind, "options": options, **{k: v for k, v in fault.items() if k != "after_step"}}
        rc, err = _run_until_killed(script, spec, fault.get("after_step"))
        assert rc == -signal.SIGKILL, f"expected the fault {fault} to kill the run, got rc={rc}:\n{err[-3000:]}"
        if before is not None:  # it resumed from the last complete snapshot there was
            assert f"{before}" in err.split("resumed from", 1)[-1].splitlines()[0], err[-2000:]
        for snap in ckpt.list_snapshots(run):  # every snapshot left behind is complete and loads
            ckpt.read_safetensors(snap / ckpt.MODEL_FILE)
            ckpt.read_safetensors(snap / snapshots.TRAINING_FILE)
    rc, err = _run_until_killed(script, {"kind": kind, "options": options}, None)
    assert rc == 0, err[-3000:]
    assert not [p for p in run.rglob("*.tmp")], "temporaries of the killed writes must be cleaned up"
    return run


def _assert_same(a: Path, b: Path, atol: float) -> None:
    wa, wb = (ckpt.read_safetensors(ckpt.resolve_checkpoint(d)) for d in (a, b))
    assert set(wa) == set(wb)
    worst, name = max(((wa[k].float() - wb[k].float()).abs().max().item(), k) for k in wa)
    assert worst <= atol, f"largest difference {worst:.3g} in {name}"


def _faults(rng: random.Random, steps: int) -> list[dict]:
    """Random steps to die after, plus one death inside a file write and one before a snapshot's rename."""
    after = sorted(rng.sample(range(1, steps - 1), 3))
    return [{"after_step": after[0]}, {"kill_in_save": 3}, {"after_step": after[1]}, {"kill_in_rename": 2},
            {"after_step": after[2]}]


def test_gan_training_survives_repeated_sigkill(face_dataset, tmp_path):
    options = dict(data=str(face_dataset), preset="tiny", kimg=0.096, seed=11, quiet=True, tensorboard=False,
                   grid_size=4, tick_kimg=0.008, keep_snapshots=2, resume="auto",
                   overrides={"snapshot_kimg": 0.016, "r1_interval": 2})
    train(TrainOptions(out=str(tmp_path / "reference"), **options))
    options["out"] = str(tmp_path / "crashed")
    run = _kill_and_resume(tmp_path, "gan", options, _faults(random.Random(0), 12))
    _assert_same(tmp_path / "reference", run, atol=1e-6)
    # The log has each tick once, in order: lines of steps repeated after a crash were rewound.
    kimg = [r["kimg"] for r in snapshots.read_jsonl(run / "stats.jsonl")]
    assert kimg == sorted(set(kimg)) and len(kimg) == 12
    assert [s.name for s in ckpt.list_snapshots(run)] == ["snapshot-000000080", "snapshot-000000096"]


def _assert_same_file(a: Path, b: Path) -> None:
    """Same tensors, bit for bit, and the same metadata (safetensors orders metadata keys differently in every
    process, so the files' bytes are not compared)."""
    (meta_a, _), (meta_b, _) = ckpt.safetensors_header(a), ckpt.safetensors_header(b)
    assert meta_a == meta_b, f"{b.name}: metadata differs"
    ta, tb = ckpt.read_safetensors(a), ckpt.read_safetensors(b)
    assert set(ta) == set(tb), f"{b.name}: other tensors"
    for k in ta:
        assert ta[k].dtype == tb[k].dtype and torch.equal(ta[k], tb[k]), f"{b.name}: {k} differs"


def test_history_is_complete_after_kills_around_its_writes(face_dataset, tmp_path):
    options = dict(data=str(face_dataset), preset="tiny", kimg=0.096, seed=5, quiet=True, tensorboard=False,
                   grid_size=4, tick_kimg=0.008, keep_snapshots=2, resume="auto",
                   overrides={"snapshot_kimg": 0.016, "r1_interval": 2})
    train(TrainOptions(out=str(tmp_path / "reference"), **options))
    reference = snapshots.list_generator_history(tmp_path / "reference")
    assert len(reference) == 6
    options["out"] = str(tmp_path / "crashed")
    # Torn history files (the 2nd of a session, then the 1st) and a death just before a snapshot's rename.
    run = _kill_and_resume(tmp_path, "gan", options,
                           [{"kill_in_history": 2}, {"kill_in_rename": 1}, {"kill_in_history": 1}])
    _assert_same(tmp_path / "reference", run, atol=0)
    assert [p.name for p in snapshots.list_generator_history(run)] == [p.name for p in reference]
    for ref in reference:
        _assert_same_file(ref, run / snapshots.HISTORY_DIR / ref.name)
    # A run left with a snapshot but no history entry (a crash under an older version) gets it back on resume.
    lost = run / snapshots.HISTORY_DIR / reference[-1].name
    lost.unlink()
    train(TrainOptions(**options))
    _assert_same_file(reference[-1], lost)


def test_tick_after_a_mid_tick_resume_is_marked_partial(face_dataset, tmp_path):
    # Ticks of 3 steps, snapshots every 2: killed before the rename of the snapshot at step 4, the run
    # resumes from step 2, one step into the tick that ends at step 3.
    options = dict(data=str(face_dataset), preset="tiny", kimg=0.048, seed=2, quiet=True, tensorboard=False,
                   grid_size=4, tick_kimg=0.024, resume="auto", overrides={"snapshot_kimg": 0.016})
    train(TrainOptions(out=str(tmp_path / "reference"), **options))
    options["out"] = str(tmp_path / "crashed")
    run = _kill_and_resume(tmp_path, "gan", options, [{"kill_in_rename": 2}])
    _assert_same(tmp_path / "reference", run, atol=0)

    def ticks(path):
        return [(r["kimg"], r["tick_steps"], r["partial"]) for r in snapshots.read_jsonl(path / "stats.jsonl")]

    assert ticks(tmp_path / "reference") == [(0.024, 3, False), (0.048, 3, False)]
    assert ticks(run) == [(0.024, 1, True), (0.048, 3, False)]


def test_short_ticks_of_talking_head_training_are_marked_partial(tmp_path):
    from test_animate import TINY, synthetic_clips

    clips = synthetic_clips(tmp_path / "clips")
    options = dict(data=str(clips), out=str(tmp_path / "run"), seed=4, quiet=True, tick_steps=2, resume="auto",
                   overrides={**TINY, "snapshot_steps": 3})
    meta_train(MetaTrainOptions(steps=3, **options))  # stops one step into its second tick
    meta_train(MetaTrainOptions(steps=6, **options))  # resumes there
    ticks = [(r["step"], r["tick_steps"], r["partial"]) for r in snapshots.read_jsonl(tmp_path / "run" / "stats.jsonl")]
    assert ticks == [(2, 2, False), (3, 1, True), (4, 1, True), (6, 2, False)]


def test_talking_head_training_survives_repeated_sigkill(tmp_path):
    from test_animate import TINY, synthetic_clips

    clips = synthetic_clips(tmp_path / "clips")
    options = dict(data=str(clips), steps=8, seed=4, quiet=True, tick_steps=1, resume="auto",
                   overrides={**TINY, "snapshot_steps": 2})
    meta_train(MetaTrainOptions(out=str(tmp_path / "reference"), **options))
    options["out"] = str(tmp_path / "crashed")
    run = _kill_and_resume(tmp_path, "talk", options,
                           [{"after_step": 3}, {"kill_in_save": 2}, {"kill_in_rename": 2}, {"after_step": 7}])
    _assert_same(tmp_path / "reference", run, atol=1e-6)
    steps = [r["step"] for r in snapshots.read_jsonl(run / "stats.jsonl")]
    assert steps == list(range(1, 9))


def test_retention_keeps_the_best_snapshot_by_fid(tmp_path):
    from facesynth.presets import get_preset

    run = tmp_path / "run"
    run.mkdir()
    cfg = get_preset("tiny")
    net = torch.nn.Linear(2, 2)
    fid = {16: 40.0, 32: 12.5, 48: 30.0, 64: 35.0, 80: 33.0}
    for images in (16, 32, 48, 64, 80):
        snapshots.save_snapshot(run, cfg, {"G": net}, {}, {"images_seen": images}, keep=2)
        with open(run / snapshots.METRICS_LOG, "a") as f:
            f.write(json.dumps({"metric": "fid2k", "results": {"fid2k": fid[images]}, "kimg": images / 1000}) + "\n")
    # The newest two and the best by FID (32); a torn last line of the log changes nothing.
    with open(run / snapshots.METRICS_LOG, "a") as f:
        f.write('{"metric": "fid2k", "results": {"fid')
    snapshots.save_snapshot(run, cfg, {"G": net}, {}, {"images_seen": 96}, keep=2)
    assert [s.name for s in ckpt.list_snapshots(run)] == ["snapshot-000000032", "snapshot-000000080",
                                                          "snapshot-000000096"]
