"""Perceptual distances between pairs of images in [-1, 1], for perceptual path length.

* ``LPIPSVGG16``: the real LPIPS (Zhang et al. 2018, v0.1 "vgg"), the distance the StyleGAN papers use.
  Its weights cannot be downloaded here, so they are read from a safetensors file given by argument or
  ``FACESYNTH_LPIPS``, holding torchvision's VGG16 ``features`` convolutions under their torchvision
  names (``features.0.weight`` ... ``features.28.bias``) and the LPIPS v0.1 linear heads under the
  ``lpips`` package's names (``lin0.model.1.weight`` ... ``lin4.model.1.weight``, shape [1, C, 1, 1]).
  Made, on a machine that has both, with::

      vgg = torchvision.models.vgg16(weights="IMAGENET1K_V1").features.state_dict()
      lin = torch.load("lpips/weights/v0.1/vgg.pth", map_location="cpu", weights_only=True)
      safetensors.torch.save_file({**{f"features.{k}": v for k, v in vgg.items()}, **lin}, "lpips_vgg16.safetensors")

* ``InceptionDistance`` (the default): the same formula with *uniform* channel weights (LPIPS's unlearned
  "lin=False" variant) on the FID Inception-v3's activations instead of VGG's: after the stem (conv_2,
  64 ch at 147²), conv_4 (192 ch at 71²), Mixed_5d (288 ch at 35²), Mixed_6e (768 ch at 17²) and Mixed_7c
  (2048 ch at 8²), each unit-normalised over channels; the distance is the sum over those five layers of
  the spatial mean of the summed squared differences.  Images go in through the FID preprocessing
  (0..255, resized to 299²).  A PPL measured with it is self-consistent (it ranks checkpoints) but is
  *not* comparable with published PPL numbers, which use LPIPS-VGG16.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import FacesynthError
from .inception import INPUT_SIZE, FeatureExtractor, to_network_input

LPIPS_ENV = "FACESYNTH_LPIPS"
# torchvision VGG16 `features` up to relu5_3: (out channels per conv, 'M' = 2x2 max-pool).
VGG16_LAYOUT = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]
LPIPS_TAPS = (3, 8, 15, 22, 29)  # indices in `features` of relu1_2, relu2_2, relu3_3, relu4_3, relu5_3
LPIPS_CHANNELS = (64, 128, 256, 512, 512)
INCEPTION_TAPS = ("conv_2", "conv_4", "mixed_2", "mixed_7", "mixed_10")
MIN_VGG_SIZE = 32  # four 2x2 pools before relu5_3: smaller crops are up-sampled


def unit_normalize(x: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    return x / (x.square().sum(dim=1, keepdim=True).sqrt() + eps)


def _layer_distance(f0: torch.Tensor, f1: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    d = (unit_normalize(f0) - unit_normalize(f1)).square()
    d = d.sum(1) if weight is None else (d * weight.view(1, -1, 1, 1)).sum(1)
    return d.mean(dim=(1, 2))


class LPIPSVGG16(nn.Module):
    """LPIPS v0.1 with VGG16: scaling layer, five ReLU taps, learned non-negative channel weights."""

    name = "lpips-vgg16"

    def __init__(self):
        super().__init__()
        layers, ch = [], 3
        for v in VGG16_LAYOUT:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(ch, v, 3, padding=1), nn.ReLU()]
                ch = v
        self.features = nn.Sequential(*layers)
        for k, c in enumerate(LPIPS_CHANNELS):
            self.register_buffer(f"lin{k}", torch.zeros(1, c, 1, 1))
        # LPIPS's input scaling: ImageNet statistics expressed for [-1, 1] inputs.
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1))

    def expected_keys(self) -> dict[str, torch.Tensor]:
        """File key -> the tensor it fills."""
        keys = {f"features.{k}": v for k, v in self.features.state_dict(keep_vars=True).items()}
        keys.update({f"lin{k}.model.1.weight": getattr(self, f"lin{k}") for k in range(len(LPIPS_CHANNELS))})
        return keys

    def taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = (x - self.shift) / self.scale
        out = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in LPIPS_TAPS:
                out.append(x)
        return out

    def forward(self, img0: torch.Tensor, img1: torch.Tensor) -> torch.Tensor:
        """[N] distances between images in [-1, 1]."""
        x = torch.cat([img0, img1]).to(self.shift.device, torch.float32)
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        if min(x.shape[-2:]) < MIN_VGG_SIZE:
            x = F.interpolate(x, size=(MIN_VGG_SIZE, MIN_VGG_SIZE), mode="bilinear", align_corners=False)
        n = img0.shape[0]
        return sum(_layer_distance(f[:n], f[n:], getattr(self, f"lin{k}")) for k, f in enumerate(self.taps(x)))


def lpips_path(path: str | os.PathLike | None = None) -> Path | None:
    path = path or os.environ.get(LPIPS_ENV) or None
    return Path(path).expanduser() if path is not None else None


def load_lpips_vgg16(path: str | os.PathLike, device: str | torch.device = "cpu") -> LPIPSVGG16:
    """LPIPS-VGG16 from a safetensors file in the layout described in the module docstring."""
    from ..checkpoints import read_safetensors  # validates the header; never unpickles

    path = Path(path)
    if not path.is_file():
        raise FacesynthError(f"{path}: LPIPS weights not found (a safetensors file of VGG16 features.* and "
                             f"lin0..4.model.1.weight; see facesynth.metrics.perceptual)")
    tensors = read_safetensors(path)
    with torch.random.fork_rng(devices=[]):  # the throw-away random init must not advance the global RNG
        net = LPIPSVGG16()
    want = net.expected_keys()
    missing = sorted(set(want) - set(tensors))
    if missing:
        raise FacesynthError(f"{path}: not LPIPS-VGG16 weights: missing {', '.join(missing[:4])}"
                             f"{' ...' if len(missing) > 4 else ''} ({len(missing)} of {len(want)} tensors)")
    with torch.no_grad():
        for key, dest in want.items():
            src = tensors[key]
            if tuple(src.shape) != tuple(dest.shape):
                raise FacesynthError(f"{path}: {key} has shape {list(src.shape)}, LPIPS-VGG16 needs "
                                     f"{list(dest.shape)}")
            dest.copy_(src.to(dest.dtype))
    return net.eval().requires_grad_(False).to(device)


class InceptionDistance:
    """LPIPS-style distance with uniform weights on FID Inception activations (see the module docstring)."""

    name = "inception-uniform-lpips"

    def __init__(self, extractor: FeatureExtractor, input_size: int = INPUT_SIZE):
        self.extractor = extractor
        # The FID network sees 299x299; projection may choose a smaller input for speed (the layers are
        # convolutional, so any size above ~75 px gives activations at every tap).
        self.input_size = input_size
        self.layers = extractor.layers()
        self.stages = [(name, mod) for name, mod in self.layers.named_children()]
        names = [n for n, _ in self.stages]
        if not all(t in names for t in INCEPTION_TAPS):
            raise FacesynthError(f"{extractor.path}: the Inception body lacks the layers {INCEPTION_TAPS}")
        self.last = max(names.index(t) for t in INCEPTION_TAPS)

    def taps(self, images: torch.Tensor) -> list[torch.Tensor]:
        x = to_network_input((images.float() + 1) * 127.5, self.input_size)
        out = []
        for name, mod in self.stages[:self.last + 1]:
            x = mod(x)
            if name in INCEPTION_TAPS:
                out.append(x)
        return out

    @torch.no_grad()
    def __call__(self, img0: torch.Tensor, img1: torch.Tensor) -> torch.Tensor:
        return self.distance(img0, img1)

    def distance(self, img0: torch.Tensor, img1: torch.Tensor) -> torch.Tensor:
        """[N] distances, differentiable (for projection); ``__call__`` is the same without gradients."""
        dev = self.extractor.device
        n = img0.shape[0]
        x = torch.cat([img0, img1]).to(dev)
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        with self.extractor.numerics():
            feats = self.taps(x)
        return sum(_layer_distance(f[:n], f[n:], None) for f in feats)


def perceptual_distance(lpips: str | os.PathLike | None = None, extractor: FeatureExtractor | None = None,
                        device: str | torch.device | None = None, inception: str | os.PathLike | None = None):
    """LPIPS-VGG16 when its weights are given (``lpips`` or $FACESYNTH_LPIPS), else the Inception distance."""
    path = lpips_path(lpips)
    if path is not None:
        return load_lpips_vgg16(path, device or "cpu")
    if extractor is None:
        from .inception import feature_extractor

        extractor = feature_extractor(device, inception)
    return InceptionDistance(extractor)
