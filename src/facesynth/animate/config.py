"""Talking-head model configurations (networks and training hyper-parameters) and their presets."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..errors import FacesynthError
from ..config import JsonConfig

CONTENT_NETS = ("inception", "lpips-vgg16", "none")


@dataclass(frozen=True)
class TalkingHeadConfig(JsonConfig):
    name: str = "custom"
    resolution: int = 64
    base_channels: int = 32  # channels after the first down-sampling block; doubled per block
    max_channels: int = 256
    embed_dim: int = 256
    g_down_blocks: int = 3  # G's encoder halves the landmark image this many times
    g_res_blocks: int = 2  # AdaIN residual blocks at the bottleneck
    attention: list = field(default_factory=list)  # resolutions with a self-attention block
    spectral_norm: bool = True
    # Meta-learning
    shots: int = 8  # K frames per episode for the embedder
    batch: int = 4  # episodes per step
    g_lr: float = 5e-5  # embedder + generator (the paper's)
    d_lr: float = 2e-4  # discriminator (the paper's)
    betas: list = field(default_factory=lambda: [0.5, 0.999])
    # Loss weights.  The paper's content term is VGG19 + VGGFace; here a network with offline weights.
    content_net: str = "inception"
    content_size: int = 128  # the content network sees frames resized to this
    content_weight: float = 1.0
    pixel_weight: float = 0.0  # an L1 term on pixels (not in the paper; speeds up learning on small budgets)
    adv_weight: float = 1.0
    fm_weight: float = 10.0  # feature matching on D's activations (the paper's 10)
    match_weight: float = 80.0  # |W_i - e_i| (the paper's 80)
    snapshot_steps: int = 500
    # Few-shot fine-tuning
    finetune_steps: int = 200
    finetune_lr: float = 5e-5

    def validate(self, source: str = "config") -> "TalkingHeadConfig":
        bad = _complaint(source)
        self.check_types(source)
        _check_shared(self, bad)
        r = self.resolution
        for name in ("base_channels", "max_channels", "embed_dim", "g_down_blocks", "shots", "batch",
                     "snapshot_steps", "finetune_steps", "content_size"):
            v = getattr(self, name)
            if not isinstance(v, int) or v <= 0:
                raise bad(f"{name} must be a positive integer, got {v!r}")
        if self.g_down_blocks > int(math.log2(r)) - 2:
            raise bad(f"g_down_blocks={self.g_down_blocks} goes below 4x4 at {r}x{r}")
        if not isinstance(self.g_res_blocks, int) or self.g_res_blocks < 0:
            raise bad(f"g_res_blocks must be a non-negative integer, got {self.g_res_blocks!r}")
        if self.base_channels < 2 or max(self.max_channels, self.embed_dim) > 4096:
            raise bad("channel counts (base_channels, max_channels, embed_dim) must lie between 2 and 4096, got "
                      f"{self.base_channels}, {self.max_channels}, {self.embed_dim}")
        for a in self.attention:
            if not isinstance(a, int) or a < 4 or a > r:
                raise bad(f"attention resolutions must lie between 4 and {r}, got {a!r}")
        for name in ("content_weight", "pixel_weight", "adv_weight", "fm_weight", "match_weight"):
            if not getattr(self, name) >= 0:
                raise bad(f"{name} must be non-negative")
        self._validate_ranges(bad)
        return self

    def _validate_ranges(self, bad) -> None:
        """Upper bounds: nothing a checkpoint or --set names may make a step allocate without limit."""
        limits = {"base_channels": 4096, "g_res_blocks": 64, "shots": 64, "batch": 4096, "content_size": 1024,
                  "snapshot_steps": 10**9, "finetune_steps": 10**9}
        for name, top in limits.items():
            v = getattr(self, name)
            if v > top:
                raise bad(f"{name} must be at most {top}, got {v!r}")
        for name in ("content_weight", "pixel_weight", "adv_weight", "fm_weight", "match_weight"):
            if not getattr(self, name) <= 1e9:
                raise bad(f"{name} must be at most 1e9")
        if len(self.attention) > 16:
            raise bad("attention names at most 16 resolutions")


def _complaint(source: str):
    def bad(msg: str) -> FacesynthError:
        return FacesynthError(f"{source}: {msg}")

    return bad


def _check_shared(cfg, bad) -> None:
    """What both families' configs require: the resolution, the content network, learning rates, betas."""
    r = cfg.resolution
    if not isinstance(r, int) or not 32 <= r <= 1024 or r & (r - 1):
        raise bad(f"resolution must be a power of two from 32 to 1024, got {r!r}")
    if cfg.content_net not in CONTENT_NETS:
        raise bad(f"content_net must be one of {', '.join(CONTENT_NETS)}, got {cfg.content_net!r}")
    for name in ("g_lr", "d_lr", "finetune_lr"):
        if not getattr(cfg, name) > 0:
            raise bad(f"{name} must be positive")
        if not getattr(cfg, name) <= 1e6:
            raise bad(f"{name} must be at most 1e6")
    b = cfg.betas
    if (len(b) != 2 or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in b)
            or not all(0 <= x < 1 for x in b)):
        raise bad(f"betas must be two numbers from 0 to 1 (excluded), got {str(b)[:60]}")


PRESETS: dict[str, TalkingHeadConfig] = {}


def _register(cfg: TalkingHeadConfig) -> None:
    PRESETS[cfg.name] = cfg.validate(f"preset {cfg.name}")


# CPU-sized: 64x64, learns within an hour on two cores.  Larger learning rates than the paper's and a
# pixel L1 term, because an hour of CPU is ~3 orders of magnitude less training than the paper's.
_register(TalkingHeadConfig(name="talking-64-cpu", resolution=64, base_channels=32, max_channels=256,
                            embed_dim=256, g_down_blocks=3, g_res_blocks=2, attention=[16], shots=4, batch=4,
                            g_lr=2e-4, d_lr=4e-4, content_size=128, pixel_weight=10.0, match_weight=10.0,
                            snapshot_steps=250, finetune_steps=100, finetune_lr=1e-4))
_register(TalkingHeadConfig(name="talking-128", resolution=128, base_channels=32, max_channels=512,
                            embed_dim=512, g_down_blocks=4, g_res_blocks=3, attention=[32], shots=8, batch=8,
                            g_lr=1e-4, d_lr=4e-4, content_size=256, pixel_weight=1.0, snapshot_steps=1000))
# The paper's 256x256 model: 64 -> 512 channels, G down to 16x16, self-attention at 32 and 64,
# 512-d embeddings, K = 8, TTUR learning rates 5e-5 / 2e-4.
_register(TalkingHeadConfig(name="talking-256-paper", resolution=256, base_channels=64, max_channels=512,
                            embed_dim=512, g_down_blocks=4, g_res_blocks=5, attention=[32, 64], shots=8, batch=48,
                            g_lr=5e-5, d_lr=2e-4, content_size=299, snapshot_steps=2000, finetune_steps=1000))


@dataclass(frozen=True)
class WarpHeadConfig(JsonConfig):
    """The warping talking head (nets/talking_warp.py): landmark TPS + learned correction, occlusion, K sources."""

    name: str = "custom-warp"
    resolution: int = 128
    channels: list = field(default_factory=lambda: [16, 32, 64, 128])  # G's encoder per scale, full size first
    motion_channels: list = field(default_factory=lambda: [32, 64, 96])  # the motion U-Net at half size
    res_blocks: int = 2
    flow_scale: float = 0.25  # the learned correction's largest shift, in grid units (1 = half the picture)
    tps_falloff: float = 1.6  # the TPS motion fades out beyond this many face radii (0: the whole picture moves)
    # The spline's smoothing (added to its kernel's diagonal): larger values follow the landmarks' jitter less
    # closely and bend the face less between them.
    tps_smoothing: float = 1e-3
    copy_bias: float = 2.0  # the output mask's starting logit: mostly the warped source
    # A correction added to the output everywhere, starting at zero: the copy-or-paint mask saturates at
    # "copy" (the painting branch then gets no gradient), yet the copied pixels still need darkening inside
    # an opened mouth, relighting and sharpening after resampling.
    residual: bool = False
    d_channels: list = field(default_factory=lambda: [32, 64, 128])
    # Meta-learning
    shots: int = 1  # K sources per training episode
    batch: int = 8
    g_lr: float = 2e-4
    d_lr: float = 2e-4
    betas: list = field(default_factory=lambda: [0.5, 0.999])
    content_net: str = "none"  # as TalkingHeadConfig's (Inception features are costly on a CPU)
    content_size: int = 128
    content_weight: float = 1.0
    pixel_weight: float = 10.0  # L1 on pixels
    ssim_weight: float = 5.0  # 1 - SSIM: structure, the quality measured
    adv_weight: float = 0.1
    fm_weight: float = 1.0
    # 1 - cosine of dlib's face descriptors of the output and the true frame (animate/identity_loss.py)
    identity_weight: float = 0.0
    # L1 over the eyes and brows alone (Gaussians on their landmarks): where dlib's descriptor, and a viewer,
    # decide identity; the plain L1 gives those few pixels little weight.
    eyes_weight: float = 0.0
    snapshot_steps: int = 250
    # Few-shot fine-tuning
    finetune_steps: int = 100
    finetune_lr: float = 5e-5

    def validate(self, source: str = "config") -> "WarpHeadConfig":
        bad = _complaint(source)
        self.check_types(source)
        _check_shared(self, bad)
        r = self.resolution
        for name, most in (("channels", 6), ("motion_channels", 5), ("d_channels", 6)):
            v = getattr(self, name)
            if (not 2 <= len(v) <= most or not all(isinstance(c, int) and not isinstance(c, bool) and 1 <= c <= 1024
                                                   for c in v)):
                raise bad(f"{name} must list 2 to {most} channel counts from 1 to 1024, got {str(v)[:60]}")
            if r >> (len(v) - (name == "motion_channels")) < 4:
                raise bad(f"{name}: {len(v)} scales go below 4x4 at {r}x{r}")
        for name, top in (("res_blocks", 64), ("shots", 64), ("batch", 4096), ("snapshot_steps", 10**9),
                          ("finetune_steps", 10**9), ("content_size", 1024)):
            v = getattr(self, name)
            if not isinstance(v, int) or not (0 if name == "res_blocks" else 1) <= v <= top:
                raise bad(f"{name} must be an integer from 1 to {top}, got {v!r}")
        if not 0 < self.flow_scale <= 2 or not -20 <= self.copy_bias <= 20 or not 0 <= self.tps_falloff <= 100:
            raise bad("flow_scale must lie in (0, 2], copy_bias in [-20, 20] and tps_falloff in [0, 100]")
        if not 1e-6 <= self.tps_smoothing <= 10:
            raise bad(f"tps_smoothing must lie in [1e-6, 10] (0 leaves coincident landmarks unsolvable), "
                      f"got {self.tps_smoothing!r}")
        for name in ("content_weight", "pixel_weight", "ssim_weight", "adv_weight", "fm_weight", "identity_weight",
                     "eyes_weight"):
            if not 0 <= getattr(self, name) <= 1e9:
                raise bad(f"{name} must be from 0 to 1e9")
        return self


WARP_PRESETS: dict[str, WarpHeadConfig] = {}


def _register_warp(cfg: WarpHeadConfig) -> None:
    WARP_PRESETS[cfg.name] = cfg.validate(f"preset {cfg.name}")


# CPU-sized: about 1M parameters, 128x128, batch-1 rendering above 10 fps on one core.
_register_warp(WarpHeadConfig(name="talking-warp-128"))
# The same at 256x256 with one more scale (for GPUs).
_register_warp(WarpHeadConfig(name="talking-warp-256", resolution=256, channels=[16, 32, 64, 128, 256],
                              motion_channels=[32, 64, 128, 128], res_blocks=3, d_channels=[32, 64, 128, 256],
                              batch=16))


def get_preset(name: str) -> TalkingHeadConfig | WarpHeadConfig:
    """A talking-head preset of either family."""
    if name in WARP_PRESETS:
        return WARP_PRESETS[name]
    try:
        return PRESETS[name]
    except KeyError:
        raise FacesynthError(f"unknown talking-head preset {name!r}; known: "
                             f"{', '.join([*PRESETS, *WARP_PRESETS])}") from None
