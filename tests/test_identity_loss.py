"""The talking heads' identity term: dlib's chips cut differentiably, the loss, and training with it."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from test_animate_warp import TINY, prepared  # noqa: F401  (fixtures)
from test_dlib_resnet import model_path  # noqa: F401

from facesynth.animate.identity_loss import chip_grids, face_chips, identity_loss
from facesynth.animate.train import MetaTrainOptions, meta_train

dlib = pytest.importorskip("dlib", reason="the identity term needs dlib (pip install 'facesynth[align]')")
UTKFACE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "faces" / "utkface-200.zip"


@pytest.fixture(scope="module")
def net(model_path):  # noqa: F811
    from facesynth.metrics.dlib_resnet import load_dlib_face_resnet

    return load_dlib_face_resnet(model_path, input_range=(-1, 1))


@pytest.fixture(scope="module")
def faces_128():
    """A few real faces at 128² with the landmarks dlib's scorer finds (on a 256² enlargement, as it does)."""
    if not UTKFACE.is_file():
        pytest.skip(f"{UTKFACE} is not here (../shared holds the development data)")
    from PIL import Image

    from facesynth.data.align import LandmarkDetector

    try:
        detector = LandmarkDetector(None)
    except Exception as e:  # noqa: BLE001 - whichever way the landmark model is missing
        pytest.skip(f"dlib's landmark model is not installed: {e}")
    out = []
    with zipfile.ZipFile(UTKFACE) as zf:
        for name in [n for n in zf.namelist() if n.endswith(".jpg")][:30:6]:
            img = np.asarray(Image.open(io.BytesIO(zf.read(name))).convert("RGB").resize((128, 128), Image.BILINEAR))
            big = np.asarray(Image.fromarray(img).resize((256, 256), Image.LANCZOS))
            found = detector.faces(big)
            if found:
                out.append((img, big, found[0]))
    assert len(out) >= 3
    return out


def test_chips_describe_faces_as_dlibs_own_chips_do(faces_128, net, model_path):  # noqa: F811
    """The grid_sample chip of a 128² frame gives (almost) the descriptor dlib computes on its own chip of the
    256² enlargement: measured cosine 0.985-0.999 on UTKFace faces, where different people score ~0.83."""
    reference = dlib.face_recognition_model_v1(str(model_path))
    for img, big, face in faces_128:
        shape = dlib.full_object_detection(dlib.rectangle(*face.box),
                                           [dlib.point(int(x), int(y)) for x, y in face.landmarks])
        want = np.asarray(reference.compute_face_descriptor(big, shape))
        landmarks = torch.tensor((np.asarray(face.landmarks, np.float64)[None] + 0.5) / 2 - 0.5, dtype=torch.float32)
        x = torch.from_numpy(img.copy()).permute(2, 0, 1)[None].float() / 127.5 - 1
        got = net(face_chips(x, chip_grids(landmarks, 128)))[0].numpy()
        assert want @ got / (np.linalg.norm(want) * np.linalg.norm(got)) > 0.98


def test_the_scorer_describes_faces_as_dlibs_own_descriptor_does(faces_128, model_path):  # noqa: F811
    """FaceDescriber runs dlib's network in PyTorch on dlib's own chip: equal to compute_face_descriptor within
    test_dlib_resnet's tolerance (measured 5.4e-7)."""
    from test_dlib_resnet import MAX_ABS_DIFF

    from facesynth.metrics.identity import FaceDescriber

    reference = dlib.face_recognition_model_v1(str(model_path))
    describer = FaceDescriber(model_path)
    for img, big, face in faces_128:
        shape = dlib.full_object_detection(dlib.rectangle(*face.box),
                                           [dlib.point(int(x), int(y)) for x, y in face.landmarks])
        want = np.asarray(reference.compute_face_descriptor(big, shape))
        got, found = describer.describe(img)
        assert found.box == face.box
        assert np.abs(got - want).max() < MAX_ABS_DIFF


def test_identity_loss_is_zero_for_the_true_frame_and_reaches_the_generator(faces_128, net):
    frames = torch.stack([torch.from_numpy(f[0].copy()).permute(2, 0, 1).float() / 127.5 - 1 for f in faces_128])
    landmarks = torch.tensor(np.stack([(np.asarray(f[2].landmarks, np.float64) + 0.5) / 2 - 0.5 for f in faces_128]),
                             dtype=torch.float32)
    assert float(identity_loss(net, frames, frames, landmarks)) < 1e-6
    other = frames.roll(1, dims=0).clone().requires_grad_(True)  # someone else in each place
    loss = identity_loss(net, other, frames, landmarks)
    assert float(loss.detach()) > 0.05
    loss.backward()
    assert other.grad is not None and float(other.grad.abs().sum()) > 0


def test_warp_training_with_the_identity_term_logs_it(prepared, model_path, tmp_path):  # noqa: F811
    run = tmp_path / "run"
    meta_train(MetaTrainOptions(data=str(prepared), out=str(run), preset="talking-warp-128", steps=2, quiet=True,
                                tick_steps=1, overrides={**TINY, "identity_weight": 1.0}, exclude=["clip2"]))
    lines = [json.loads(x) for x in (run / "stats.jsonl").read_text().splitlines()]
    assert all(np.isfinite(x["loss/identity"]) and x["loss/identity"] >= 0 for x in lines)

    # Few-shot fine-tuning of a model trained with the term keeps it.
    from facesynth.animate.episodes import load_videos
    from facesynth.animate.reenact import Portrait
    from facesynth.animate.warp_finetune import finetune_warp
    from facesynth.animate.warp_model import load_warp_generator

    _, cfg, G, _, _ = load_warp_generator(run)
    v = load_videos(prepared, cfg.resolution, include=["clip2"], quiet=True)[0]
    portraits = [Portrait("f0", v.frames[0].permute(1, 2, 0).numpy(), v.drawings[0].permute(1, 2, 0).numpy(),
                          v.landmarks[0])]
    _, info = finetune_warp(G, cfg, portraits, steps=1, quiet=True)
    assert np.isfinite(info["log"][-1]["identity"]) and info["log"][-1]["identity"] >= 0
