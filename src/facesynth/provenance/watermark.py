"""An invisible watermark in the pixels: a facesynth tag and a 16-bit model id, read back after the metadata is
gone (screenshots, re-encoding, resizing).

The mark lives in the luma's global DCT at a canonical size, so a resized copy carries it at the same
coefficients: the image is reduced to S×S, a band of S×S DCT coefficients is read along fixed pseudo-random
directions (one for the tag, one per id bit), and the change is upsampled back as a smooth pattern.
Embedding is informed (each projection is pushed past a margin measured against the image's own level in
that band, so the face itself does not drown the mark) and capped in strength per image.  Two tiers:
small images (under 192 px, as the bundled 64² model makes) use 64² and 4-12 cycles per image; larger ones
use 128² and 12-28 cycles, where a face has less energy of its own and the mark costs less (PSNR).
Detection tries both tiers, and a few crop hypotheses, and reports the best z-score of the tag.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image

ID_BITS = 16
REFERENCE_DIRECTIONS = 64  # untouched directions: how much the image itself varies in the band
KEY = 0xFACE5  # fixed: anyone with facesynth can check for the mark, as with any public detector
THRESHOLD_Z = 4.0  # tag z-score for "found" as the image is (about 3e-5 of unmarked images by chance)
THRESHOLD_Z_CROPPED = 5.0  # when only a crop hypothesis finds it: more tries, so more evidence is asked
CROP_KEPT = (0.95, 0.9)  # side fractions a cropped copy may have kept
SMALL_SIDE = 192  # below this, the small tier
MIN_SPREAD = 24.0  # margins are measured in the image's own spread, but never in less than this (DCT units)


def _dct_matrix(n: int) -> np.ndarray:
    k = np.arange(n)[:, None]
    x = np.arange(n)[None, :]
    m = np.cos(np.pi * (2 * x + 1) * k / (2 * n)) * np.sqrt(2 / n)
    m[0] /= np.sqrt(2)
    return m


@dataclass(frozen=True)
class Tier:
    name: str
    size: int  # canonical side
    band: tuple[int, int]  # DCT indices kept: lo <= max(u, v) <= hi
    cap_rms: float  # the most the mark may change luma, RMS in 8-bit levels
    tag_margin: float = 6.0  # in units of the image's own spread along a direction
    bit_margin: float = 1.5

    @property
    def dct(self) -> np.ndarray:
        return _tier_arrays(self)[0]

    def directions(self):
        return _tier_arrays(self)[1:]

    def canonical(self, luma: np.ndarray) -> np.ndarray:
        h, w = luma.shape
        resample = Image.BOX if min(h, w) >= self.size else Image.BICUBIC
        img = Image.fromarray(luma.astype(np.float32), mode="F").resize((self.size, self.size), resample)
        return np.asarray(img, dtype=np.float64)

    def coefficients(self, luma: np.ndarray) -> np.ndarray:
        u, v = _band(self)
        d = self.dct
        return (d @ self.canonical(luma) @ d.T)[u, v]

    def soft(self, luma: np.ndarray) -> tuple[float, np.ndarray]:
        """(tag z-score, id bits as soft values) in units of the image's own spread."""
        tag, bits, ref = self.directions()
        c = self.coefficients(luma)
        spread = np.sqrt(np.mean((ref @ c) ** 2)) + 1e-9
        return float(tag @ c) / spread, (bits @ c) / spread

    def pattern(self, luma: np.ndarray, bits: np.ndarray) -> np.ndarray:
        """The luma change (float, the image's size) that carries ``bits`` (+-1) and the tag."""
        tag, bit_dirs, ref = self.directions()
        c = self.coefficients(luma)
        # A flat picture has little spread of its own: the margin still has to outlast re-compression's noise.
        spread = max(np.sqrt(np.mean((ref @ c) ** 2)), MIN_SPREAD)
        dirs = np.vstack([tag[None], bit_dirs])
        want = np.concatenate([[1.0], bits])
        margin = np.concatenate([[self.tag_margin], np.full(len(bits), self.bit_margin)]) * spread
        push = np.maximum(0.0, margin - want * (dirs @ c)) * want  # only as far as each projection needs
        full = np.zeros((self.size, self.size))
        u, v = _band(self)
        full[u, v] = dirs.T @ push
        delta = self.dct.T @ full @ self.dct
        rms = np.sqrt(np.mean(delta ** 2))
        delta *= min(1.0, self.cap_rms / max(rms, 1e-9))
        h, w = luma.shape
        return np.asarray(Image.fromarray(delta.astype(np.float32), mode="F").resize((w, h), Image.BICUBIC),
                          dtype=np.float64)


@lru_cache(maxsize=None)
def _band(tier: Tier) -> tuple[np.ndarray, np.ndarray]:
    lo, hi = tier.band
    uv = [(u, v) for u in range(hi + 1) for v in range(hi + 1) if lo <= max(u, v) <= hi]
    return np.array([p[0] for p in uv]), np.array([p[1] for p in uv])


@lru_cache(maxsize=None)
def _tier_arrays(tier: Tier):
    m = len(_band(tier)[0])
    rng = np.random.RandomState((KEY + tier.size) % 2**32)
    q, _ = np.linalg.qr(rng.randn(m, 1 + ID_BITS + REFERENCE_DIRECTIONS))  # orthonormal: no direction leaks
    return _dct_matrix(tier.size), q[:, 0], q[:, 1:1 + ID_BITS].T, q[:, 1 + ID_BITS:].T


SMALL = Tier("small", 64, (8, 24), cap_rms=8.0)
LARGE = Tier("large", 128, (24, 56), cap_rms=2.4)
TIERS = (SMALL, LARGE)


def luma(rgb: np.ndarray) -> np.ndarray:
    rgb = np.asarray(rgb, dtype=np.float64)
    if rgb.ndim == 2:
        return rgb
    return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114


def id_bits(model_id: int) -> np.ndarray:
    return np.array([(model_id >> (ID_BITS - 1 - i)) & 1 for i in range(ID_BITS)], dtype=np.float64) * 2 - 1


def embed(pixels: np.ndarray, model_id: int) -> np.ndarray:
    """uint8 [H, W, 3] -> the same picture carrying the tag and ``model_id`` (16 bits)."""
    rgb = np.asarray(pixels)
    y = luma(rgb)
    tier = SMALL if min(y.shape) < SMALL_SIDE else LARGE
    delta = tier.pattern(y, id_bits(model_id & 0xFFFF))
    out = rgb.astype(np.float64) + (delta[..., None] if rgb.ndim == 3 else delta)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


@dataclass
class Reading:
    """What one image (or the mean over a video's frames) says."""
    z: float  # the tag's z-score: about N(0, 1) on unmarked pictures
    bits: np.ndarray  # soft id bits
    tier: str
    hypothesis: str  # "as is" or the crop it was found under
    threshold: float

    @property
    def found(self) -> bool:
        return bool(self.z >= self.threshold)

    @property
    def model_id(self) -> int:
        return int("".join("1" if b > 0 else "0" for b in self.bits), 2)

    @property
    def bit_confidence(self) -> float:
        """The weakest id bit's distance from undecided, in the same units as z (over 2 is solid)."""
        return float(np.min(np.abs(self.bits)))


def _uncropped(y: np.ndarray, kept: float, anchor: str) -> np.ndarray:
    """``y`` placed where a crop keeping ``kept`` of each side would have come from, edges repeated."""
    h, w = y.shape
    big_h, big_w = round(h / kept), round(w / kept)
    top = {"t": 0, "b": big_h - h, "c": (big_h - h) // 2}[anchor[0]]
    left = {"l": 0, "r": big_w - w, "c": (big_w - w) // 2}[anchor[1]]
    return np.pad(y, ((top, big_h - h - top), (left, big_w - w - left)), mode="edge")


def _hypotheses(y: np.ndarray):
    yield "as is", y, THRESHOLD_Z
    for kept in CROP_KEPT:
        for anchor in ("tl", "tr", "bl", "br", "cc"):
            yield f"crop {kept:.0%} {anchor}", _uncropped(y, kept, anchor), THRESHOLD_Z_CROPPED


def read_luma(y: np.ndarray, crops: bool = True) -> Reading:
    """The strongest reading over tiers (and crop hypotheses, if the image as it is shows nothing)."""
    best = None
    for name, candidate, threshold in _hypotheses(y):
        if name != "as is" and (not crops or best.found):
            break
        for tier in TIERS:
            z, bits = tier.soft(candidate)
            r = Reading(z, bits, tier.name, name, threshold)
            # Compare by margin over each hypothesis' own threshold, so a crop guess must earn its higher bar.
            if best is None or r.z - r.threshold > best.z - best.threshold:
                best = r
    return best


def read(pixels: np.ndarray, crops: bool = True) -> Reading:
    return read_luma(luma(pixels), crops)


def read_frames(frames) -> Reading | None:
    """A video: per tier, the mean of every frame's reading (no crop search; frames are not independent,
    so the mean z is not scaled up by the frame count)."""
    sums = {t.name: [0.0, np.zeros(ID_BITS)] for t in TIERS}
    n = 0
    for frame in frames:
        y = luma(frame)
        for t in TIERS:
            z, bits = t.soft(y)
            sums[t.name][0] += z
            sums[t.name][1] += bits
        n += 1
    if n == 0:
        return None
    name, (z, bits) = max(sums.items(), key=lambda kv: kv[1][0])
    return Reading(z / n, bits / n, name, f"mean of {n} frames", THRESHOLD_Z)
