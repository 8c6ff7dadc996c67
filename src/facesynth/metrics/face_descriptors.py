"""dlib's 128-D face descriptors of whole images, for a Fréchet distance ImageNet features cannot flatter (fd_dlib).

A discriminator built on ImageNet features can lower FID without making better faces (Kynkäänniemi et al.
2023, "The Role of ImageNet Classes in Fréchet Inception Distance").  ``fd_dlib`` measures the same Fréchet
distance on the features of a network trained only on faces: dlib's face-recognition ResNet
(``dlib_face_recognition_resnet_model_v1.dat``, the one identity.py uses; PyPI ``face-recognition-models`` or
``$FACESYNTH_FACE_DESCRIPTOR``).

No face detector runs.  The images a generator is scored on are already aligned crops, and dlib's face chip
of such a crop is the crop itself: on 143 UTKFace photos (200², where the detector found a face) the chip
``get_face_chip_details(shape_5, 150, 0.25)`` spans (-0.04, -0.04)-(1.04, 1.04) of the image (std 0.03),
rotated 0.003 rad.  So each image, whole, is resized bilinearly (PIL, which also low-passes when it shrinks)
to 150², the chip size the ResNet takes, and given to the chip form of ``compute_face_descriptor``.  Those
descriptors of 64² copies lie 0.20 on average from the descriptors of the detector-aligned 200² originals,
where different people lie 0.82 apart (dlib's "same person" threshold is 0.6).  A generated image that holds
no face still gets a descriptor, which is the point: a detector that skipped it would hide the failure.

The network is dlib's own, run by PyTorch (dlib_resnet.py, weights read from the same file; its descriptors
match dlib's ``compute_face_descriptor`` to 5e-7 per component): 5-10x faster than dlib on one CPU thread, on a
GPU where the metrics run there, and dlib itself is not needed.  Descriptors of one image may differ in the
last bits with the batch it is in (the convolutions' rounding), far below what the distance resolves.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .dlib_resnet import CHIP, DlibFaceResNet, load_dlib_face_resnet
from .identity import descriptor_model_path
from .inception import file_sha256

DESCRIPTOR_DIM = 128
# Part of the cache identity: a change to how images become chips must never hit old statistics.
PREPROCESSING = f"whole-image-pil-bilinear-{CHIP}"
NETWORK = "pytorch"  # dlib_resnet.py's port, not dlib's own C++ (equal to ~5e-7, but a cache never mixes them)


def to_chips(images: torch.Tensor | np.ndarray) -> list[np.ndarray]:
    """uint8 [N, C, H, W] (C 1 or 3) -> N contiguous uint8 [150, 150, 3] RGB chips."""
    x = torch.as_tensor(images)
    if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"expected uint8 images [N, 3, H, W], got {x.dtype} {list(x.shape)}")
    if x.shape[1] == 1:
        x = x.repeat(1, 3, 1, 1)
    out = []
    for img in x.permute(0, 2, 3, 1).cpu().numpy():
        chip = img if img.shape[:2] == (CHIP, CHIP) else np.asarray(
            Image.fromarray(img).resize((CHIP, CHIP), Image.BILINEAR))
        out.append(np.ascontiguousarray(chip))
    return out


class DescriptorExtractor:
    """uint8 images -> 128-D dlib face descriptors (float32); the interface of inception.FeatureExtractor."""

    label = "dlib"  # names the cache folders and progress bars
    dim = DESCRIPTOR_DIM
    batch = 64

    def __init__(self, net: DlibFaceResNet, path: Path, device: torch.device):
        self.net, self.path, self.device = net, path, device

    @property
    def identity(self) -> str:
        return f"dlib-face-resnet-v1:{file_sha256(self.path)}:{PREPROCESSING}:{NETWORK}"

    @torch.no_grad()
    def __call__(self, images: torch.Tensor | np.ndarray) -> np.ndarray:
        chips = to_chips(images)
        out = [np.zeros((0, DESCRIPTOR_DIM), np.float32)]
        for i in range(0, len(chips), self.batch):
            x = torch.from_numpy(np.stack(chips[i:i + self.batch])).to(self.device).permute(0, 3, 1, 2).float()
            out.append(self.net(x).float().cpu().numpy())
        return np.concatenate(out)


_extractors: dict[tuple[str, str], DescriptorExtractor] = {}


def descriptor_extractor(path: str | os.PathLike | None = None, device: str | torch.device | None = None,
                         purpose: str = "fd_dlib") -> DescriptorExtractor:
    """dlib's ResNet from ``path``, $FACESYNTH_FACE_DESCRIPTOR or face-recognition-models, on ``device`` (default
    CPU); loaded once per process.  A missing or unreadable model file is one FacesynthError line."""
    file = descriptor_model_path(path, purpose=purpose)
    device = torch.device(device or "cpu")
    key = (str(file.resolve()), str(device))
    if key not in _extractors:
        net = load_dlib_face_resnet(file).to(device)
        _extractors[key] = DescriptorExtractor(net, file, device)
    return _extractors[key]
