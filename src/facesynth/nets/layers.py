"""Building blocks shared by every generator and discriminator.

Everything is plain PyTorch (no compiled extensions) so that CPU, CUDA and
Apple devices run the same code.  Weights are stored with unit variance and
scaled at run time ("equalized learning rate", Karras et al. 2018) so Adam
sees every layer at the same effective learning rate.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

SQRT2 = math.sqrt(2.0)

# Gains that keep activations at unit variance after each nonlinearity.
ACTIVATION_GAIN = {"linear": 1.0, "lrelu": SQRT2}


def activate(x: torch.Tensor, activation: str) -> torch.Tensor:
    if activation == "lrelu":
        return F.leaky_relu(x, 0.2) * SQRT2
    if activation == "linear":
        return x
    raise ValueError(f"unknown activation {activation!r}")


def scale_and_clamp(x: torch.Tensor, gain: float = 1.0, clamp: float | None = None) -> torch.Tensor:
    """A layer's output gain, then (``clamp``) its values limited to +-clamp * gain: stylegan2-ada's
    ``conv_clamp``, which keeps reduced-precision layers finite and is part of what its models compute."""
    if gain != 1.0:
        x = x * gain
    if clamp is not None:
        x = x.clamp(-clamp * gain, clamp * gain)
    return x


def normalize_2nd_moment(x: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    """Scale each vector to unit mean square (the mapping network's input norm, and pixel norm)."""
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


class ReducedPrecision:
    """A block that may compute in reduced precision: training sets ``compute_dtype`` on the blocks of the
    highest resolutions (training/performance.py); the block casts its input, its layers follow the input."""

    compute_dtype: torch.dtype | None = None

    def cast_input(self, x: torch.Tensor | None) -> torch.Tensor | None:
        return None if x is None else x.to(self.compute_dtype or torch.float32)


# --------------------------------------------------------------------------- FIR resampling

def make_fir_kernel(taps=(1, 3, 3, 1)) -> torch.Tensor:
    """Separable low-pass filter, normalised to unit DC gain."""
    k = torch.tensor(taps, dtype=torch.float32)
    k = k[:, None] * k[None, :]
    return k / k.sum()


def _depthwise(kernel: torch.Tensor, channels: int, x: torch.Tensor) -> torch.Tensor:
    return kernel.to(dtype=x.dtype)[None, None].expand(channels, 1, *kernel.shape)


def fir_filter(x: torch.Tensor, kernel: torch.Tensor, pad: tuple[int, int], gain: float = 1.0) -> torch.Tensor:
    """Apply a 2-D FIR filter per channel with asymmetric zero padding (before, after)."""
    c = x.shape[1]
    x = F.pad(x, (pad[0], pad[1], pad[0], pad[1]))
    w = _depthwise(kernel * gain, c, x)
    return F.conv2d(x, w, groups=c)


def upsample2d(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """2x up-sampling: zero insertion followed by the FIR filter (gain 4), as one transposed conv."""
    c = x.shape[1]
    w = _depthwise(kernel * 4.0, c, x)
    return F.conv_transpose2d(x, w, stride=2, padding=(kernel.shape[0] - 2) // 2, groups=c)


def downsample2d(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """2x anti-aliased down-sampling: FIR filter then keep every second pixel, as one strided conv."""
    c = x.shape[1]
    w = _depthwise(kernel, c, x)
    p = (kernel.shape[0] - 2) // 2
    return F.conv2d(x, w, stride=2, padding=p, groups=c)


# --------------------------------------------------------------------------- equalized-lr layers

class EqualLinear(nn.Module):
    """Fully connected layer with run-time weight scaling and a learning-rate multiplier."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, bias_init: float = 0.0,
                 lr_multiplier: float = 1.0, activation: str = "linear"):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_multiplier)
        self.bias = nn.Parameter(torch.full((out_features,), float(bias_init))) if bias else None
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight * self.weight_gain
        b = self.bias * self.bias_gain if self.bias is not None else None
        if self.activation == "linear":
            return F.linear(x, w, b)
        return activate(F.linear(x, w, b), self.activation)

    def extra_repr(self) -> str:
        return f"in={self.weight.shape[1]}, out={self.weight.shape[0]}, act={self.activation}"


class EqualConv2d(nn.Module):
    """Convolution with run-time weight scaling and optional anti-aliased 2x down-sampling."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool = True,
                 activation: str = "linear", down: bool = False, clamp: float | None = None):
        super().__init__()
        self.clamp = clamp
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size * kernel_size)
        self.activation = activation
        self.down = down
        self.kernel_size = kernel_size
        if down:
            self.register_buffer("fir", make_fir_kernel(), persistent=False)

    def forward(self, x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
        w = (self.weight * self.weight_gain).to(x.dtype)
        k = self.kernel_size
        if self.down:
            if k == 1:
                x = downsample2d(x, self.fir)
                x = F.conv2d(x, w)
            else:
                # Blur so the strided conv samples a band-limited signal (padding matches StyleGAN2).
                p = (self.fir.shape[0] - 2 + k - 1) // 2
                x = fir_filter(x, self.fir, (p, p))
                x = F.conv2d(x, w, stride=2)
        else:
            x = F.conv2d(x, w, padding=k // 2)
        if self.bias is not None:
            x = x + self.bias.view(1, -1, 1, 1).to(x.dtype)
        return scale_and_clamp(activate(x, self.activation), gain, self.clamp)

    def extra_repr(self) -> str:
        return (f"in={self.weight.shape[1]}, out={self.weight.shape[0]}, k={self.kernel_size}, "
                f"act={self.activation}, down={self.down}")


# --------------------------------------------------------------------------- style-modulated layers

# "shared": activations scaled around one convolution (one big conv, no per-sample weights);
# "grouped": per-sample weights in a grouped convolution.
MODCONV_FORM = "shared"


def modulated_conv2d(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, demodulate: bool = True,
                     up: bool = False, fir: torch.Tensor | None = None, grouped: bool | None = None) -> torch.Tensor:
    """Convolution whose weights are scaled per input channel by ``styles`` (StyleGAN2).

    With ``demodulate`` each output channel is rescaled to unit expected variance,
    which replaces AdaIN's explicit instance normalisation.

    Two mathematically equal forms exist: scaling the activations around one
    shared convolution, or a grouped convolution with per-sample weights.
    ``grouped=None`` follows ``MODCONV_FORM`` (benchmarks/train_speed.py
    --compare-modconv measures both).
    """
    if grouped is None:
        grouped = MODCONV_FORM == "grouped"
    batch, in_ch = x.shape[:2]
    out_ch, _, kh, kw = weight.shape
    if demodulate:
        # Per-sample output scale = rsqrt(sum over in/k of (w * s)^2).
        wsq = weight.square().sum(dim=(2, 3))  # [out, in]
        dcoefs = (styles.square() @ wsq.t() + 1e-8).rsqrt()  # [batch, out]
    if grouped:
        w = weight[None] * styles[:, None, :, None, None]
        if demodulate:
            w = w * dcoefs[:, :, None, None, None]
        x = x.reshape(1, batch * in_ch, *x.shape[2:])
        w = w.reshape(batch * out_ch, in_ch, kh, kw).to(x.dtype)
        if up:
            w = w.reshape(batch, out_ch, in_ch, kh, kw).transpose(1, 2).reshape(batch * in_ch, out_ch, kh, kw)
            x = F.conv_transpose2d(x, w, stride=2, groups=batch)
        else:
            x = F.conv2d(x, w, padding=kh // 2, groups=batch)
        x = x.reshape(batch, out_ch, *x.shape[2:])
    else:
        x = x * styles.to(x.dtype)[:, :, None, None]
        if up:
            x = F.conv_transpose2d(x, weight.transpose(0, 1).to(x.dtype), stride=2)
        else:
            x = F.conv2d(x, weight.to(x.dtype), padding=kh // 2)
        if demodulate:
            x = x * dcoefs.to(x.dtype)[:, :, None, None]
    if up:
        # The transposed conv leaves 2H + k - 2 pixels; the FIR filter trims and anti-aliases them.
        x = fir_filter(x, fir, _up_pad(fir.shape[0], kh), gain=4.0)
    return x


def _up_pad(fir_taps: int, kernel_size: int) -> tuple[int, int]:
    # Output of a stride-2 transposed conv has 2H + k - 2 pixels; filtering with
    # `fir_taps` taps and this padding returns exactly 2H (StyleGAN2's layout).
    total = fir_taps - kernel_size + 1
    return ((total + 1) // 2, total // 2)


class ModulatedConv2d(nn.Module):
    """Style-modulated convolution: affine(w) -> per-input-channel scales."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, w_dim: int,
                 demodulate: bool = True, up: bool = False):
        super().__init__()
        self.affine = EqualLinear(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size * kernel_size)
        self.demodulate = demodulate
        self.up = up
        if up:
            self.register_buffer("fir", make_fir_kernel(), persistent=False)
        else:
            self.fir = None

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        styles = self.affine(w)
        weight = self.weight
        if self.demodulate:
            # Demodulation cancels any global weight scale, so fold the gain into the styles only
            # when it matters (toRGB) and keep the weights untouched otherwise.
            return modulated_conv2d(x, weight, styles, demodulate=True, up=self.up, fir=self.fir)
        return modulated_conv2d(x, weight, styles * self.weight_gain, demodulate=False, up=self.up, fir=self.fir)


class NoiseInjection(nn.Module):
    """Adds per-pixel Gaussian noise with a learned per-channel strength (initialised to zero)."""

    def __init__(self, channels: int, resolution: int):
        super().__init__()
        self.strength = nn.Parameter(torch.zeros(channels))
        # A fixed noise map makes `noise_mode="const"` reproducible across calls.
        self.register_buffer("const_noise", torch.randn(1, 1, resolution, resolution))
        # How random maps are drawn: torch.randn, or a data-parallel rank's share of the global batch's draw.
        self.draw = None

    def forward(self, x: torch.Tensor, mode: str = "random", noise: torch.Tensor | None = None) -> torch.Tensor:
        if noise is None:
            if mode == "none":
                return x
            if mode == "const":
                noise = self.const_noise
            elif mode == "random":
                noise = (self.draw or torch.randn)(x.shape[0], 1, x.shape[2], x.shape[3], device=x.device,
                                                   dtype=x.dtype)
            else:
                raise ValueError(f"noise mode must be random, const or none, not {mode!r}")
        return x + noise.to(x.dtype) * self.strength.view(1, -1, 1, 1).to(x.dtype)


class MinibatchStdDev(nn.Module):
    """Appends the average per-group standard deviation as extra feature maps (ProGAN)."""

    def __init__(self, group_size: int = 4, num_channels: int = 1):
        super().__init__()
        self.group_size = group_size
        self.num_channels = num_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        g = min(self.group_size, n)
        if n % g != 0:
            g = math.gcd(n, g)
        f = self.num_channels
        y = x.reshape(g, -1, f, c // f, h, w)
        y = y - y.mean(dim=0)
        y = (y.square().mean(dim=0) + 1e-8).sqrt()
        y = y.mean(dim=(2, 3, 4))  # [n/g, f]
        y = y.reshape(-1, f, 1, 1).repeat(g, 1, h, w)
        return torch.cat([x, y], dim=1)
