"""An identity term for the talking heads: the generated frame should be the same person as the true one.

The scorer of ``animate eval`` is dlib's face-recognition ResNet on dlib's aligned 150x150 face chips; the
term uses the same network, differentiable (``metrics/dlib_resnet.py``), on chips cut the same way: dlib's
``get_face_chip_details`` places the chip from the target frame's 68 landmarks (which the episode already
holds, so no detector runs), and ``grid_sample`` cuts it from the generated and the true frame alike, so the
gradient reaches the generator through the crop.  The loss is 1 - cosine of the two descriptors.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import FacesynthError
from ..metrics.dlib_resnet import CHIP
from ..metrics.identity import CHIP_PADDING as PADDING  # the scorer's chips
# dlib's points are integers: landmarks go through it at this many times the frame's scale.
SUBPIXEL = 16


def chip_grids(landmarks: torch.Tensor, resolution: int, size: int = CHIP, padding: float = PADDING) -> torch.Tensor:
    """[N, 68, 2] pixel coordinates (x, y) in a resolution² frame -> [N, size, size, 2] sampling grids
    (``grid_sample``'s [-1, 1] units, align_corners=False) of dlib's face chip of each frame."""
    try:
        import dlib
    except ImportError:
        raise FacesynthError("the identity term (identity_weight) places face chips with dlib: "
                             "pip install 'facesynth[align]'") from None
    grids = []
    steps = (np.arange(size) + 0.5) / size - 0.5  # chip pixel centres, as fractions of its side
    for lm in landmarks.detach().cpu().numpy().astype(np.float64):
        pts = np.rint((lm + 0.5) * SUBPIXEL).astype(int)
        box = dlib.rectangle(*map(int, pts.min(0)), *map(int, pts.max(0)))
        shape = dlib.full_object_detection(box, [dlib.point(int(x), int(y)) for x, y in pts])
        details = dlib.get_face_chip_details(shape, size, padding)
        rect, angle = details.rect, details.angle
        centre = np.array([rect.center().x, rect.center().y]) / SUBPIXEL - 0.5
        side = np.array([rect.width(), rect.height()]) / SUBPIXEL
        u, v = np.meshgrid(steps * side[0], steps * side[1])  # offsets from the centre, before rotation
        c, s = np.cos(angle), np.sin(angle)
        x = centre[0] + c * u - s * v
        y = centre[1] + s * u + c * v
        grids.append(np.stack([(2 * x + 1) / resolution - 1, (2 * y + 1) / resolution - 1], axis=-1))
    return torch.as_tensor(np.stack(grids), dtype=torch.float32, device=landmarks.device)


def face_chips(images: torch.Tensor, grids: torch.Tensor) -> torch.Tensor:
    return F.grid_sample(images, grids.to(images.dtype), mode="bilinear", padding_mode="border",
                         align_corners=False)


def identity_network(cfg, device="cpu") -> torch.nn.Module | None:
    """dlib's face ResNet on [-1, 1] chips where ``cfg`` weighs the identity term; None where it is off."""
    if not getattr(cfg, "identity_weight", 0):
        return None
    from ..metrics.dlib_resnet import load_dlib_face_resnet

    return load_dlib_face_resnet(input_range=(-1, 1)).to(device).eval()


def identity_loss(net: torch.nn.Module, fake: torch.Tensor, target: torch.Tensor,
                  target_landmarks: torch.Tensor) -> torch.Tensor:
    """Mean 1 - cos(descriptor(fake chip), descriptor(true chip)); ``net`` maps [-1, 1] chips to descriptors."""
    grids = chip_grids(target_landmarks, fake.shape[-1])
    with torch.no_grad():
        want = net(face_chips(target.float(), grids))
    got = net(face_chips(fake.float(), grids))
    return (1 - F.cosine_similarity(got, want, dim=1)).mean()


__all__ = ["chip_grids", "face_chips", "identity_network", "identity_loss"]
