"""NaN/Inf: a step with a non-finite loss is skipped where it happens, bad weights roll the run back to its last
snapshot, and a failure that keeps coming back stops the run with a diagnosis naming the loss and the layer."""

import json

import pytest
import torch

import facesynth.training.loop as loop
from facesynth import checkpoints as ckpt
from facesynth.errors import FacesynthError
from facesynth.nets.discriminator import DiscriminatorBlock
from facesynth.training.guard import NonFiniteGuard
from facesynth.training.loop import Trainer, TrainOptions, train
from facesynth.training.optim import adam


def _opts(data, out, **kw):
    base = dict(data=str(data), out=str(out), preset="tiny", kimg=0.064, seed=2, quiet=True, tensorboard=False,
                grid_size=4, history=False, tick_kimg=0.016, overrides={"snapshot_kimg": 0.016, "r1_interval": 2})
    return TrainOptions(**{**base, **kw})


def _on_step(monkeypatch, actions: dict):
    """Run ``actions[k](trainer)`` just before the training step numbered k (0-based)."""
    step = Trainer.train_step

    def patched(self, real):
        if self.step in actions:
            actions[self.step](self)
        return step(self, real)

    monkeypatch.setattr(Trainer, "train_step", patched)


@pytest.mark.parametrize("beta1", [0.0, 0.5], ids=["GAN-adam", "talking-heads-adam"])
def test_a_bad_step_leaves_weights_moments_and_step_count_alone(beta1):
    torch.manual_seed(0)
    net = torch.nn.Linear(4, 3)
    opt = adam(net.parameters(), lr=0.1, betas=(beta1, 0.99))
    guard = NonFiniteGuard()

    def step(scale):
        opt.zero_grad(set_to_none=True)
        loss = net(torch.ones(2, 4)).square().sum() * scale
        loss.backward()
        guard.check("loss", loss, opt)
        opt.step()

    def snapshot():
        return [t.clone() for p in net.parameters() for t in (p.detach(), *opt.state[p].values())]

    step(1.0)  # moments are non-zero now: with beta1 > 0, a zeroed gradient would still move the weights
    before = snapshot()
    step(float("nan"))
    assert all(torch.equal(a, b) for a, b in zip(before, snapshot()))
    assert guard.take() == {"loss": 1}
    step(1.0)
    assert not torch.equal(before[0], net.weight) and guard.take() == {}


def test_a_nan_loss_skips_that_step_only(face_dataset, tmp_path, monkeypatch, capsys):
    calls = {"n": 0}
    real_loss = loop.generator_loss

    def loss(logits):
        calls["n"] += 1
        out = real_loss(logits)
        return out * float("nan") if calls["n"] == 3 else out

    monkeypatch.setattr(loop, "generator_loss", loss)
    seen = {}

    def keep(name):
        return lambda t: seen.update({name: {k: v.clone() for k, v in t.G.state_dict().items()}})

    _on_step(monkeypatch, {2: keep("before"), 3: keep("after")})  # around the step with the bad loss
    train(_opts(face_dataset, tmp_path / "r", kimg=0.032))
    for k, v in seen["before"].items():  # G did not move in the bad step (D's half of it was fine)
        if "w_avg" not in k:
            assert torch.equal(v, seen["after"][k]), k
    assert "skipped 1 of 2 steps" in capsys.readouterr().err
    lines = [json.loads(x) for x in (tmp_path / "r" / "stats.jsonl").read_text().splitlines()]
    assert [x["skipped_steps"] for x in lines] == [0, 1]
    assert all(torch.isfinite(t).all() for t in ckpt.read_safetensors(ckpt.resolve_checkpoint(tmp_path / "r")).values())


def test_corrupted_weights_roll_back_to_the_last_snapshot(face_dataset, tmp_path, monkeypatch, capsys):
    train(_opts(face_dataset, tmp_path / "reference"))

    def flip_a_bit(trainer):  # once: a NaN appears in G's weights, as a memory fault would make it
        if not getattr(flip_a_bit, "done", False):
            flip_a_bit.done = True
            with torch.no_grad():
                trainer.G.mapping.layers[0].weight[0, 0] = float("nan")

    _on_step(monkeypatch, {5: flip_a_bit})
    train(_opts(face_dataset, tmp_path / "r"))
    assert "rolled back to snapshot-000000032" in capsys.readouterr().err
    ref, got = (ckpt.read_safetensors(ckpt.resolve_checkpoint(tmp_path / d)) for d in ("reference", "r"))
    for k in ref:  # after the rollback the run replays exactly what the uninterrupted one did
        torch.testing.assert_close(got[k], ref[k], rtol=1e-5, atol=1e-6, msg=k)


def test_a_failure_that_keeps_coming_back_stops_with_a_diagnosis(face_dataset, tmp_path, monkeypatch):
    forward = DiscriminatorBlock.forward
    state = {"broken": False}

    def broken(self, x):
        out = forward(self, x)
        return out * float("nan") if state["broken"] and self.resolution == 16 else out

    monkeypatch.setattr(DiscriminatorBlock, "forward", broken)
    _on_step(monkeypatch, {4: lambda t: state.update(broken=True)})
    with pytest.raises(FacesynthError) as err:
        train(_opts(face_dataset, tmp_path / "r"))
    msg = str(err.value)
    assert "after 3 rollbacks" in msg and "loss/D" in msg and "loss/G" in msg
    assert "first layer with a non-finite output: D.blocks.0" in msg and "non-finite weights: none" in msg
    # The snapshots written before the failure are intact and finite.
    snaps = ckpt.list_snapshots(tmp_path / "r")
    assert snaps and all(torch.isfinite(t).all() for s in snaps
                         for t in ckpt.read_safetensors(s / ckpt.MODEL_FILE).values())


def test_talking_head_training_skips_and_then_stops_on_nan(tmp_path, monkeypatch, capsys):
    from test_animate import TINY, synthetic_clips

    import facesynth.animate.train as talk

    clips = synthetic_clips(tmp_path / "clips")
    calls = {"n": 0}
    real_loss = talk.hinge_d_loss

    def loss(real, fake):
        calls["n"] += 1
        out = real_loss(real, fake)
        return out * float("nan") if calls["n"] == 2 or calls["n"] >= 5 else out

    monkeypatch.setattr(talk, "hinge_d_loss", loss)
    options = dict(data=str(clips), out=str(tmp_path / "r"), steps=8, seed=1, quiet=True, tick_steps=2,
                   overrides={**TINY, "snapshot_steps": 2})
    with pytest.raises(FacesynthError, match=r"diverged at step 6: non-finite losses: loss/D \(2 steps\)"):
        talk.meta_train(talk.MetaTrainOptions(**options))
    assert "skipped 1 of 2 steps before step 2" in capsys.readouterr().err
    assert [s.name for s in ckpt.list_snapshots(tmp_path / "r")][-1] == "snapshot-000000008"  # step 4 kept
