"""Adaptive discriminator augmentation (Karras et al. 2020, "Training Generative Adversarial Networks with
Limited Data").

Two pieces:

* :class:`AugmentPipe` -- a random, differentiable augmentation applied to *every* image the discriminator
  sees, real and generated, so the generator is never asked to produce augmented images.  Each transform is
  applied to each image independently with probability ``p`` (times its multiplier); because every image is
  left untouched with probability ``1 - p`` per transform, the augmented distribution still determines the
  clean one (the paper's "non-leaking" argument) as long as ``p`` stays well below 1.
* :class:`AdaController` -- the overfitting heuristic ``r_t = E[sign(D(real))]`` that nudges ``p`` up when D
  grows over-confident on reals and down otherwise.

The module is self-contained torch code: apart from FacesynthError it knows nothing of the rest of facesynth.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from facesynth.errors import FacesynthError

__all__ = ["AugmentPipe", "AdaController", "PRESETS"]

# Group multipliers of the reference presets; "bgc" is the one the paper recommends.
_BLIT = dict(xflip=1.0, rotate90=1.0, xint=1.0)
_GEOM = dict(scale=1.0, rotate=1.0, aniso=1.0, xfrac=1.0)
_COLOR = dict(brightness=1.0, contrast=1.0, lumaflip=1.0, hue=1.0, saturation=1.0)
PRESETS: dict[str, dict[str, float]] = {
    "blit": _BLIT,
    "geom": _GEOM,
    "color": _COLOR,
    "bg": {**_BLIT, **_GEOM},
    "bgc": {**_BLIT, **_GEOM, **_COLOR},
}
_GROUPS = tuple(PRESETS["bgc"])


# --------------------------------------------------------------------------------------------------------
# Batched homogeneous matrices, built on the generator's device (CPU by default) so that deciding which
# images need work never waits on an accelerator.


def _eye(n: int, size: int, device: torch.device) -> torch.Tensor:
    return torch.eye(size, device=device).expand(n, size, size).clone()


def _translate2d(tx: torch.Tensor, ty: torch.Tensor) -> torch.Tensor:
    m = _eye(tx.shape[0], 3, tx.device)
    m[:, 0, 2], m[:, 1, 2] = tx, ty
    return m


def _scale2d(sx: torch.Tensor, sy: torch.Tensor) -> torch.Tensor:
    m = _eye(sx.shape[0], 3, sx.device)
    m[:, 0, 0], m[:, 1, 1] = sx, sy
    return m


def _rotate2d(cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    # Takes cos/sin rather than an angle so quarter turns can be exact (cos(pi/2) is not 0 in float32).
    m = _eye(cos.shape[0], 3, cos.device)
    m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1] = cos, -sin, sin, cos
    return m


def _rotate2d_angle(theta: torch.Tensor) -> torch.Tensor:
    return _rotate2d(torch.cos(theta), torch.sin(theta))


def _quarter_turns(k: torch.Tensor) -> torch.Tensor:
    """Rotation by k * 90 degrees with exact integer entries, so pixel centres land on pixel centres."""
    cos = torch.tensor([1.0, 0.0, -1.0, 0.0], device=k.device)[k % 4]
    sin = torch.tensor([0.0, 1.0, 0.0, -1.0], device=k.device)[k % 4]
    return _rotate2d(cos, sin)


def _luma_axis(device: torch.device) -> torch.Tensor:
    """(1, 1, 1, 0) / sqrt(3) as a column: the grey axis of RGB in homogeneous coordinates."""
    return torch.tensor([1.0, 1.0, 1.0, 0.0], device=device).div(math.sqrt(3)).reshape(4, 1)


def _translate3d(t: torch.Tensor) -> torch.Tensor:
    m = _eye(t.shape[0], 4, t.device)
    m[:, :3, 3] = t[:, None]
    return m


def _scale3d(s: torch.Tensor) -> torch.Tensor:
    m = _eye(s.shape[0], 4, s.device)
    m[:, 0, 0] = m[:, 1, 1] = m[:, 2, 2] = s
    return m


def _luma_reflect(flip: torch.Tensor) -> torch.Tensor:
    """Householder reflection through the plane orthogonal to the luma axis where flip is 1."""
    v = _luma_axis(flip.device)
    return _eye(flip.shape[0], 4, flip.device) - 2 * (v @ v.T) * flip[:, None, None]


def _luma_rotate(theta: torch.Tensor) -> torch.Tensor:
    """Rodrigues' rotation about the luma axis; written as I + ... so theta = 0 gives I exactly."""
    v = _luma_axis(theta.device)[:3, 0]
    k = torch.zeros(3, 3, device=theta.device)  # cross-product matrix of v
    k[0, 1], k[0, 2], k[1, 0], k[1, 2], k[2, 0], k[2, 1] = -v[2], v[1], v[2], -v[0], -v[1], v[0]
    sin, one_minus_cos = torch.sin(theta)[:, None, None], (1 - torch.cos(theta))[:, None, None]
    m = _eye(theta.shape[0], 4, theta.device)
    m[:, :3, :3] += sin * k + one_minus_cos * (k @ k)
    return m


def _luma_saturate(s: torch.Tensor) -> torch.Tensor:
    """Scale the chroma (the part orthogonal to the luma axis) by s; I + (s - 1)(I - vv^T) is exact at s = 1."""
    v = _luma_axis(s.device)[:3]
    chroma = torch.eye(3, device=s.device) - v @ v.T
    m = _eye(s.shape[0], 4, s.device)
    m[:, :3, :3] += (s - 1)[:, None, None] * chroma
    return m


def _is_identity(m: torch.Tensor) -> torch.Tensor:
    return (m == torch.eye(m.shape[-1], device=m.device)).flatten(1).all(dim=1)


# --------------------------------------------------------------------------------------------------------
# Applying the matrices to images.


def _resample(images: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Sample images at G @ (output pixel position); G is in pixel units about the image centre.

    Conjugating by S = diag(W/2, H/2) turns pixel units into affine_grid's [-1, 1] coordinates, which keeps
    rotations and anisotropic scaling undistorted on non-square images.
    """
    n, _, h, w = images.shape
    s = torch.diag(torch.tensor([w / 2, h / 2, 1.0], dtype=g.dtype, device=g.device))
    s_inv = torch.diag(torch.tensor([2 / w, 2 / h, 1.0], dtype=g.dtype, device=g.device))
    theta = (s_inv @ g @ s)[:, :2, :].to(images)
    grid = F.affine_grid(theta, [n, images.shape[1], h, w], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def _recolour(images: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Apply 4x4 homogeneous colour matrices to NCHW images (RGB, or grey via the mean luma response)."""
    n, ch, h, w = images.shape
    c = c.to(images)
    flat = images.reshape(n, ch, h * w)
    if ch == 3:
        out = torch.baddbmm(c[:, :3, 3:], c[:, :3, :3], flat)
    else:  # ch == 1, checked by the caller: a grey pixel g is (g, g, g); report the mean of the outputs
        row = c[:, :3, :].mean(dim=1)
        out = flat * row[:, :3].sum(dim=1)[:, None, None] + row[:, 3][:, None, None]
    return out.reshape(n, ch, h, w)


def _apply_where_needed(images: torch.Tensor, m: torch.Tensor, fn) -> torch.Tensor:
    """Run fn only on the images whose matrix is not the identity; the rest pass through bit-exactly."""
    todo = (~_is_identity(m)).nonzero().flatten()
    if todo.numel() == 0:
        return images
    if todo.numel() == images.shape[0]:
        return fn(images, m)
    idx = todo.to(images.device)
    return images.index_copy(0, idx, fn(images.index_select(0, idx), m[todo]))


# --------------------------------------------------------------------------------------------------------


class _Draw:
    """Random numbers from one generator on its own device, in a fixed order, so runs resume exactly."""

    def __init__(self, generator: torch.Generator | None):
        self.gen = generator
        self.device = generator.device if generator is not None else torch.device("cpu")

    def uniform(self, *shape: int) -> torch.Tensor:
        return torch.rand(shape, generator=self.gen, device=self.device)

    def normal(self, *shape: int) -> torch.Tensor:
        return torch.randn(shape, generator=self.gen, device=self.device)

    def integers(self, high: int, n: int) -> torch.Tensor:
        return torch.randint(high, (n,), generator=self.gen, device=self.device)

    def gate(self, n: int, prob: float) -> torch.Tensor:
        """Per-image booleans, true with probability prob."""
        return self.uniform(n) < prob


class AugmentPipe(nn.Module):
    """ADA's augmentation pipeline: ``pipe(images, generator) -> augmented images`` (NCHW, about [-1, 1]).

    Each keyword names a group and is its probability multiplier (0 turns the group off; the reference uses
    1): a group is applied to an image with probability ``multiplier * p``.

    Geometric groups, composed per image into one 3x3 matrix and resampled once:
      ``xflip`` (random horizontal flip), ``rotate90`` (random quarter turn), ``xint`` (integer translation,
      uniform up to ``xint_max`` of the size), ``scale`` (isotropic, log2-normal with std ``scale_std``, i.e.
      log-normal std 0.2 ln 2), ``rotate`` (uniform up to ``rotate_max`` * pi, drawn twice -- before and after
      ``aniso`` -- each with probability ``1 - sqrt(1 - rotate * p)`` so that some rotation happens with
      probability p), ``aniso`` (scale x by s and y by 1/s, log2-normal std ``aniso_std``), ``xfrac``
      (fractional translation, normal with std ``xfrac_std`` of the size).  As in the reference, the flip and
      quarter-turn groups draw "no change" among their outcomes, so xflip flips with probability p / 2.

    Colour groups, composed into one 4x4 matrix in RGB about grey 0, luma axis (1, 1, 1) / sqrt(3):
      ``brightness`` (add normal, std ``brightness_std``), ``contrast`` (multiply, log2-normal std
      ``contrast_std``, i.e. 0.5 ln 2), ``lumaflip`` (random reflection of luma), ``hue`` (rotation about the
      luma axis, uniform up to ``hue_max`` * pi), ``saturation`` (scale chroma, log2-normal std
      ``saturation_std``, i.e. ln 2).  Three-channel images get the full matrix; one-channel images get its
      mean luma response.

    ``p`` is a plain float in [0, 1] (set it directly or through :class:`AdaController`).  At ``p = 0`` the
    output equals the input exactly: images whose matrix is the identity are never resampled.

    Randomness comes only from the ``generator`` passed to :meth:`forward` (the global CPU generator if None);
    numbers are drawn on the generator's device, so a CPU generator works for CUDA images and saving its
    ``get_state()`` with a checkpoint resumes the exact augmentation stream.  The output is differentiable
    with respect to the images (not the random parameters).

    Simplified relative to the paper's implementation: the geometric resampling is one bilinear
    ``grid_sample`` at the native resolution with mirror ("reflection", edge pixel repeated) padding.  The
    reference pads with a reflect (edge not repeated) border sized to the transformed corners, upsamples 2x
    with a symmetric-6 wavelet low-pass, samples bilinearly, then low-passes and downsamples.  So here
    fractional moves blur slightly more and strong shrinking can alias; integer moves (flip, quarter turn,
    integer translation) are exact up to float rounding either way.  The reference's image-space filtering,
    additive noise and cutout groups (not part of "bgc") are not implemented.
    """

    def __init__(
        self,
        *,
        p: float = 0.0,
        xflip: float = 0.0,
        rotate90: float = 0.0,
        xint: float = 0.0,
        scale: float = 0.0,
        rotate: float = 0.0,
        aniso: float = 0.0,
        xfrac: float = 0.0,
        brightness: float = 0.0,
        contrast: float = 0.0,
        lumaflip: float = 0.0,
        hue: float = 0.0,
        saturation: float = 0.0,
        xint_max: float = 0.125,
        scale_std: float = 0.2,
        rotate_max: float = 1.0,
        aniso_std: float = 0.2,
        xfrac_std: float = 0.125,
        brightness_std: float = 0.2,
        contrast_std: float = 0.5,
        hue_max: float = 1.0,
        saturation_std: float = 1.0,
    ):
        super().__init__()
        self.mult = dict(xflip=xflip, rotate90=rotate90, xint=xint, scale=scale, rotate=rotate, aniso=aniso,
                         xfrac=xfrac, brightness=brightness, contrast=contrast, lumaflip=lumaflip, hue=hue,
                         saturation=saturation)
        for name, value in self.mult.items():
            if not (float(value) >= 0):
                raise ValueError(f"AugmentPipe: multiplier {name}={value} must be >= 0")
        self.mult = {k: float(v) for k, v in self.mult.items()}
        # Magnitudes, in the reference's units (log2 for the multiplicative ones).
        self.xint_max, self.scale_std, self.rotate_max = xint_max, scale_std, rotate_max
        self.aniso_std, self.xfrac_std = aniso_std, xfrac_std
        self.brightness_std, self.contrast_std = brightness_std, contrast_std
        self.hue_max, self.saturation_std = hue_max, saturation_std
        self.p = p

    # -- construction ------------------------------------------------------------------------------------

    @classmethod
    def preset(cls, name: str, **kwargs) -> "AugmentPipe":
        """One of the reference's group sets: blit, geom, color, bg, bgc; kwargs override or add."""
        if name not in PRESETS:
            raise FacesynthError(f"unknown augmentation preset {name!r}; choose from {', '.join(PRESETS)}")
        return cls(**{**PRESETS[name], **kwargs})

    @classmethod
    def bgc(cls, **kwargs) -> "AugmentPipe":
        """The paper's recommended set: blit + geometric + colour."""
        return cls.preset("bgc", **kwargs)

    @property
    def p(self) -> float:
        return self._p

    @p.setter
    def p(self, value) -> None:
        value = float(value)
        if not 0.0 <= value <= 1.0:  # also rejects NaN
            raise ValueError(f"AugmentPipe: p={value} must be in [0, 1]")
        self._p = value

    def extra_repr(self) -> str:
        groups = ", ".join(f"{k}={v:g}" for k, v in self.mult.items() if v)
        return f"p={self.p:.4f}, {groups or 'no groups'}"

    # -- random transforms ---------------------------------------------------------------------------------

    def sample_transforms(self, n: int, height: int, width: int,
                          generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw the per-image matrices: G [n, 3, 3] maps output pixels (about the centre) to input pixels,
        C [n, 4, 4] maps homogeneous RGB to RGB.  Both live on the generator's device."""
        draw = _Draw(generator)
        return self._geometry(draw, n, height, width), self._colour(draw, n)

    def _prob(self, name: str) -> float:
        return self.mult[name] * self.p

    def _geometry(self, draw: _Draw, n: int, h: int, w: int) -> torch.Tensor:
        # G is the *inverse* map (output -> input), so each forward transform T enters as G @ T^-1; the image
        # sees them in the order listed: flip, quarter turn, integer shift, scale, rotate, aniso, rotate, shift.
        m, g = self.mult, _eye(n, 3, draw.device)
        if m["xflip"]:
            flip = torch.where(draw.gate(n, self._prob("xflip")), draw.integers(2, n), 0)
            g = g @ _scale2d(1.0 - 2.0 * flip, torch.ones(n, device=draw.device))
        if m["rotate90"]:
            k = torch.where(draw.gate(n, self._prob("rotate90")), draw.integers(4, n), 0)
            g = g @ _quarter_turns(-k)
        if m["xint"]:
            t = (draw.uniform(n, 2) * 2 - 1) * self.xint_max
            t = torch.where(draw.gate(n, self._prob("xint"))[:, None], t, 0.0)
            g = g @ _translate2d(-torch.round(t[:, 0] * w), -torch.round(t[:, 1] * h))
        if m["scale"]:
            s = torch.where(draw.gate(n, self._prob("scale")), torch.exp2(draw.normal(n) * self.scale_std), 1.0)
            g = g @ _scale2d(1 / s, 1 / s)
        # Two independent rotations with probability q each: P(at least one) = 1 - (1 - q)^2 = rotate * p.
        q = 1 - math.sqrt(min(max(1 - m["rotate"] * self.p, 0.0), 1.0))
        if m["rotate"]:
            g = g @ self._random_rotation(draw, n, q)
        if m["aniso"]:
            s = torch.where(draw.gate(n, self._prob("aniso")), torch.exp2(draw.normal(n) * self.aniso_std), 1.0)
            g = g @ _scale2d(1 / s, s)
        if m["rotate"]:
            g = g @ self._random_rotation(draw, n, q)
        if m["xfrac"]:
            t = torch.where(draw.gate(n, self._prob("xfrac"))[:, None], draw.normal(n, 2) * self.xfrac_std, 0.0)
            g = g @ _translate2d(-t[:, 0] * w, -t[:, 1] * h)
        return g

    def _random_rotation(self, draw: _Draw, n: int, prob: float) -> torch.Tensor:
        theta = (draw.uniform(n) * 2 - 1) * math.pi * self.rotate_max
        theta = torch.where(draw.gate(n, prob), theta, 0.0)
        return _rotate2d_angle(-theta)  # inverse map

    def _colour(self, draw: _Draw, n: int) -> torch.Tensor:
        # Forward maps, each applied after the previous one: C = T_k @ ... @ T_1.
        m, c = self.mult, _eye(n, 4, draw.device)
        if m["brightness"]:
            b = torch.where(draw.gate(n, self._prob("brightness")), draw.normal(n) * self.brightness_std, 0.0)
            c = _translate3d(b) @ c
        if m["contrast"]:
            s = torch.where(draw.gate(n, self._prob("contrast")), torch.exp2(draw.normal(n) * self.contrast_std), 1.0)
            c = _scale3d(s) @ c
        if m["lumaflip"]:
            flip = torch.where(draw.gate(n, self._prob("lumaflip")), draw.integers(2, n), 0)
            c = _luma_reflect(flip.float()) @ c
        if m["hue"]:
            theta = (draw.uniform(n) * 2 - 1) * math.pi * self.hue_max
            c = _luma_rotate(torch.where(draw.gate(n, self._prob("hue")), theta, 0.0)) @ c
        if m["saturation"]:
            s = torch.exp2(draw.normal(n) * self.saturation_std)
            c = _luma_saturate(torch.where(draw.gate(n, self._prob("saturation")), s, 1.0)) @ c
        return c

    # -- forward -----------------------------------------------------------------------------------------

    def forward(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if images.ndim != 4:
            raise ValueError(f"AugmentPipe expects NCHW images, got shape {tuple(images.shape)}")
        n, ch, h, w = images.shape
        has_colour = any(self.mult[k] for k in _COLOR)
        if has_colour and ch not in (1, 3):
            raise FacesynthError(f"colour augmentation needs 1 or 3 channels, got {ch}")
        if n == 0 or not any(self.mult.values()):
            return images
        g, c = self.sample_transforms(n, h, w, generator)
        images = _apply_where_needed(images, g, _resample)
        return _apply_where_needed(images, c, _recolour)


class AdaController:
    """Adjusts ``p`` from the overfitting heuristic r_t = E[sign(D(real))].

    Call :meth:`accumulate` with D's logits on (augmented) reals whenever they are computed, and
    :meth:`update` once per training step with that step's batch size.  Every ``interval`` steps, r_t is the
    mean sign since the last adjustment and p moves by ``sign(r_t - target) * images / (ada_kimg * 1000)``
    (``images`` = batch * interval for a constant batch), so p can cross [0, 1] in ``ada_kimg`` thousand
    images; p is clamped to [0, 1] (the reference clamps only at 0).  With ``fixed_p`` set, p never moves
    (r_t is still measured, for logging).  Pass ``pipe`` to have its ``p`` kept in step.

    ``state_dict()`` holds plain floats and ints (JSON-able): p plus the partial interval, so a resumed run
    continues exactly.  Hyperparameters are constructor arguments and are not part of the state.
    """

    def __init__(self, pipe: AugmentPipe | None = None, *, target: float = 0.6, interval: int = 4,
                 ada_kimg: float = 500.0, p: float = 0.0, fixed_p: float | None = None):
        if interval < 1 or ada_kimg <= 0:
            raise ValueError("AdaController: interval must be >= 1 and ada_kimg > 0")
        if fixed_p is not None and not 0.0 <= fixed_p <= 1.0:
            raise ValueError(f"AdaController: fixed_p={fixed_p} must be in [0, 1]")
        self.pipe, self.target, self.interval, self.ada_kimg = pipe, float(target), int(interval), float(ada_kimg)
        self.fixed_p = None if fixed_p is None else float(fixed_p)
        self._p = min(max(float(p), 0.0), 1.0)
        self.last_rt: float | None = None
        self._reset_interval()
        self._push()

    @property
    def p(self) -> float:
        return self.fixed_p if self.fixed_p is not None else self._p

    def _reset_interval(self) -> None:
        # The sign sum stays a device tensor between updates so accumulate() never waits on the GPU.
        self._sign_sum: torch.Tensor | float = 0.0
        self._count = 0
        self._steps = 0
        self._images = 0

    def _push(self) -> None:
        if self.pipe is not None:
            self.pipe.p = self.p

    def accumulate(self, real_logits: torch.Tensor) -> None:
        """Add the signs of D's outputs on real images."""
        logits = real_logits.detach()
        self._sign_sum = self._sign_sum + logits.sign().sum(dtype=torch.float32)
        self._count += logits.numel()

    def update(self, batch: int) -> float:
        """Count one step of ``batch`` images; every ``interval`` steps adjust p.  Returns the current p."""
        self._steps += 1
        self._images += int(batch)
        if self._steps < self.interval:
            return self.p
        if self._count > 0:
            self.last_rt = float(self._sign_sum) / self._count
            if self.fixed_p is None:
                direction = (self.last_rt > self.target) - (self.last_rt < self.target)
                self._p = min(max(self._p + direction * self._images / (self.ada_kimg * 1000), 0.0), 1.0)
        self._reset_interval()
        self._push()
        return self.p

    def state_dict(self) -> dict:
        return {"p": self._p, "sign_sum": float(self._sign_sum), "count": self._count, "steps": self._steps,
                "images": self._images, "last_rt": self.last_rt}

    def load_state_dict(self, state: dict) -> None:
        self._p = min(max(float(state["p"]), 0.0), 1.0)
        self._sign_sum = float(state["sign_sum"])
        self._count, self._steps, self._images = int(state["count"]), int(state["steps"]), int(state["images"])
        self.last_rt = None if state.get("last_rt") is None else float(state["last_rt"])
        self._push()
