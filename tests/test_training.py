import json

import pytest
import torch

from facesynth import checkpoints as ckpt
from facesynth.errors import FacesynthError
from facesynth.nets import build_generator
from facesynth.presets import get_preset
from facesynth.training import snapshots
from facesynth.training.loop import Trainer, TrainOptions, train, update_ema


def _opts(data, out, **kw):
    base = dict(data=str(data), out=str(out), preset="tiny", kimg=0.096, seed=3, quiet=True, tensorboard=False,
                grid_size=4, overrides={"snapshot_kimg": 0.048})
    base.update(kw)
    return TrainOptions(**base)


def _weights(run_dir):
    _, tensors = ckpt.read_model_file(run_dir)
    return tensors


def test_training_writes_snapshots_grids_and_stats(face_dataset, tmp_path):
    out = tmp_path / "run"
    last = train(_opts(face_dataset, out))
    assert last["kimg"] == pytest.approx(0.096)
    names = {p.name for p in out.iterdir()}
    assert {"reals.png", "fakes-init.png", "stats.jsonl", "latest.json", "training_options.json"} <= names
    snaps = ckpt.list_snapshots(out)
    assert [s.name for s in snaps] == ["snapshot-000000048", "snapshot-000000096"]
    from facesynth.util.atomic import dir_mode, file_mode

    for s in snaps:
        assert {p.name for p in s.iterdir()} == {"model.safetensors", "training.safetensors", "config.json",
                                                 "state.json"}
        # Temp-file helpers create 0700/0600; snapshots get the permissions a plain mkdir/open would give.
        assert s.stat().st_mode & 0o777 == dir_mode()
        assert all(p.stat().st_mode & 0o777 == file_mode() for p in s.iterdir())
    lines = [json.loads(x) for x in (out / "stats.jsonl").read_text().splitlines()]
    assert lines and all("loss/G" in x and "img_per_s" in x and "mem_mb" in x for x in lines)
    assert any(p.name.startswith("fakes-0") for p in out.iterdir())
    assert not any(p.name.endswith(".tmp") for p in out.rglob("*")), "no temporary files may be left behind"


def test_same_seed_same_run(face_dataset, tmp_path):
    train(_opts(face_dataset, tmp_path / "a"))
    train(_opts(face_dataset, tmp_path / "b"))
    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)


def test_resume_reaches_the_same_weights_as_an_uninterrupted_run(face_dataset, tmp_path):
    # Uninterrupted: 96 images.  Interrupted: stop at 48 (a snapshot), then resume in a new process state.
    train(_opts(face_dataset, tmp_path / "full", overrides={"snapshot_kimg": 1.0, "r1_interval": 2}))
    train(_opts(face_dataset, tmp_path / "part", kimg=0.048, overrides={"snapshot_kimg": 1.0, "r1_interval": 2}))
    torch.manual_seed(999)  # disturb the global RNG: resume must restore it
    # A different --seed on resume must not change the run: the snapshot's seed wins.
    train(_opts(face_dataset, tmp_path / "part", resume="auto", seed=77,
                overrides={"snapshot_kimg": 1.0, "r1_interval": 2}))
    full, part = _weights(tmp_path / "full"), _weights(tmp_path / "part")
    assert set(full) == set(part)
    for k in full:
        torch.testing.assert_close(part[k], full[k], rtol=1e-5, atol=1e-6, msg=k)
    state = json.loads((ckpt.list_snapshots(tmp_path / "part")[-1] / "state.json").read_text())
    assert state["images_seen"] == 96 and state["step"] == 12


def test_ema_moves_toward_the_generator_by_one_minus_beta():
    torch.manual_seed(0)
    G, G_ema = build_generator(get_preset("tiny")), build_generator(get_preset("tiny"))
    for b in G.buffers():
        b.add_(1.0)
    before = [p.detach().clone() for p in G_ema.parameters()]
    update_ema(G_ema, G, 0.75)
    for pe, p, old in zip(G_ema.parameters(), G.parameters(), before):
        torch.testing.assert_close(pe, 0.75 * old + 0.25 * p.detach())
    assert all(torch.equal(be, b) for be, b in zip(G_ema.buffers(), G.buffers()))


def test_training_changes_the_generator(face_dataset, tmp_path):
    t = Trainer(_opts(face_dataset, tmp_path / "r"))
    before = {k: v.clone() for k, v in t.G.state_dict().items()}
    t.run()
    changed = [k for k, v in t.G.state_dict().items() if not torch.equal(v, before[k])]
    assert any("mapping" in k for k in changed) and any("synthesis" in k for k in changed)
    # w_avg is tracked for truncation.
    assert t.G.mapping.w_avg.abs().sum() > 0


def test_existing_run_is_not_overwritten_without_resume(face_dataset, tmp_path):
    train(_opts(face_dataset, tmp_path / "r"))
    with pytest.raises(FacesynthError, match="already holds a run"):
        Trainer(_opts(face_dataset, tmp_path / "r"))


def test_resume_refuses_architecture_changes(face_dataset, tmp_path):
    train(_opts(face_dataset, tmp_path / "r"))
    with pytest.raises(FacesynthError, match="cannot change"):
        Trainer(_opts(face_dataset, tmp_path / "r", resume="auto", overrides={"channel_max": 64}))


def test_snapshot_retention_keeps_the_newest(face_dataset, tmp_path):
    train(_opts(face_dataset, tmp_path / "r", kimg=0.2, keep_snapshots=2, overrides={"snapshot_kimg": 0.04}))
    snaps = ckpt.list_snapshots(tmp_path / "r")
    assert len(snaps) == 2 and snaps[-1].name == "snapshot-000000200"
    assert json.loads((tmp_path / "r" / "latest.json").read_text())["snapshot"] == snaps[-1].name
    # Every snapshot's G_ema stays in history/, loadable on its own.
    history = snapshots.list_generator_history(tmp_path / "r")
    assert len(history) == 5 and history[-1].name == "G_ema-000000200.safetensors"
    G = ckpt.load_generator(history[0])
    assert G(torch.randn(1, G.z_dim)).shape == (1, 3, 16, 16)


def test_path_length_regularisation_runs(face_dataset, tmp_path):
    t = Trainer(_opts(face_dataset, tmp_path / "r", overrides={"pl_weight": 2.0, "pl_interval": 1}))
    from facesynth.data.loader import batch_iterator

    stats = t.train_step(next(batch_iterator(t.dataset, t.cfg.batch, 0)))
    assert "loss/pl" in stats and torch.isfinite(stats["loss/pl"])
    assert float(t.pl_mean) > 0
