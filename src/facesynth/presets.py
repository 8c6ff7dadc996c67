"""Named model-and-training configurations.

A preset fixes the architecture (resolution x capacity) and the training
hyper-parameters that go with it.  Every snapshot stores the full config so a
checkpoint always rebuilds its own networks, whatever the presets become later.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, fields

from .errors import FacesynthError

# Sanity limits: a config outside them is refused before any tensor is allocated.
MAX_RESOLUTION = 4096
MAX_CHANNELS = 4096
MAX_DIM = 4096


@dataclass(frozen=True)
class GANConfig:
    """Architecture and training hyper-parameters of one GAN model."""

    name: str = "custom"
    arch: str = "stylegan2"
    resolution: int = 64
    image_channels: int = 3
    # Channels at resolution r are min(channel_base // r, channel_max), unless channel_overrides
    # names r (JSON object keys are strings): thin high-resolution layers make CPU presets cheap.
    channel_base: int = 4096
    channel_max: int = 512
    channel_overrides: dict = field(default_factory=dict)
    z_dim: int = 512
    w_dim: int = 512
    mapping_layers: int = 8
    mapping_lr_multiplier: float = 0.01
    mbstd_group: int = 4
    # Training
    batch: int = 32
    g_lr: float = 0.0025
    d_lr: float = 0.0025
    r1_gamma: float = 0.1
    r1_interval: int = 16
    pl_weight: float = 0.0
    pl_interval: int = 4
    pl_batch_shrink: int = 2
    pl_decay: float = 0.01
    style_mixing_prob: float = 0.9
    ema_kimg: float = 10.0
    ema_rampup: float | None = 0.05
    w_avg_beta: float = 0.995
    xflip: bool = True
    snapshot_kimg: float = 10.0
    description: str = ""

    # ----------------------------------------------------------------- derived
    @property
    def log2_resolution(self) -> int:
        return int(math.log2(self.resolution))

    def channels_at(self, res: int) -> int:
        if str(res) in self.channel_overrides:
            return int(self.channel_overrides[str(res)])
        return min(self.channel_base // res, self.channel_max)

    @property
    def block_resolutions(self) -> list[int]:
        return [2 ** i for i in range(2, self.log2_resolution + 1)]

    @property
    def num_ws(self) -> int:
        """One w per convolution, plus one for the last toRGB (others share the next conv's w)."""
        return 2 * self.log2_resolution - 2

    def validate(self, source: str = "config") -> "GANConfig":
        def bad(msg: str) -> FacesynthError:
            return FacesynthError(f"{source}: {msg}")

        r = self.resolution
        if not isinstance(r, int) or r < 4 or r > MAX_RESOLUTION or (r & (r - 1)) != 0:
            raise bad(f"resolution must be a power of two between 4 and {MAX_RESOLUTION}, got {r!r}")
        if self.arch not in ("stylegan2",):
            raise bad(f"unknown arch {self.arch!r} (known: stylegan2)")
        for name in ("channel_base", "channel_max", "z_dim", "w_dim", "mapping_layers", "batch", "image_channels"):
            v = getattr(self, name)
            if not isinstance(v, int) or v <= 0:
                raise bad(f"{name} must be a positive integer, got {v!r}")
        if self.channel_max > MAX_CHANNELS or self.z_dim > MAX_DIM or self.w_dim > MAX_DIM:
            raise bad(f"channel_max/z_dim/w_dim exceed {MAX_CHANNELS}")
        if not isinstance(self.channel_overrides, dict):
            raise bad("channel_overrides must be an object mapping resolutions to channel counts")
        for k, v in self.channel_overrides.items():
            if str(k) not in {str(b) for b in self.block_resolutions}:
                raise bad(f"channel_overrides names resolution {k!r}, which this {r}x{r} model does not have")
            if not isinstance(v, int) or not 1 <= v <= MAX_CHANNELS:
                raise bad(f"channel_overrides[{k!r}] must be a channel count between 1 and {MAX_CHANNELS}, got {v!r}")
        if self.channels_at(r) < 1:
            raise bad(f"channel_base {self.channel_base} leaves no channels at {r}x{r}")
        if self.image_channels not in (1, 3):
            raise bad(f"image_channels must be 1 or 3, got {self.image_channels}")
        if self.mapping_layers > 32:
            raise bad(f"mapping_layers must be at most 32, got {self.mapping_layers}")
        return self

    # ----------------------------------------------------------------- (de)serialise
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict, source: str = "config") -> "GANConfig":
        if not isinstance(d, dict):
            raise FacesynthError(f"{source}: expected a JSON object, got {type(d).__name__}")
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(d) - set(known))
        if unknown:
            raise FacesynthError(f"{source}: unknown config keys {unknown}")
        try:
            cfg = cls(**d)
        except TypeError as e:  # pragma: no cover - dataclass arg errors
            raise FacesynthError(f"{source}: {e}") from None
        return cfg.validate(source)

    def replace(self, **changes) -> "GANConfig":
        return dataclasses.replace(self, **changes)


PRESETS: dict[str, GANConfig] = {}


def _register(cfg: GANConfig) -> GANConfig:
    PRESETS[cfg.name] = cfg.validate(f"preset {cfg.name}")
    return cfg


_register(GANConfig(
    name="tiny", resolution=16, channel_base=256, channel_max=32, z_dim=32, w_dim=32, mapping_layers=2,
    batch=8, ema_kimg=0.05, snapshot_kimg=0.1, mbstd_group=4,
    description="16x16, ~30k parameters: a training step in milliseconds, for tests and smoke runs.",
))
_register(GANConfig(
    name="stylegan2-32-cpu", resolution=32, channel_base=2048, channel_max=256, z_dim=256, w_dim=256,
    mapping_layers=4, batch=32, r1_gamma=0.01, ema_kimg=5.0, snapshot_kimg=5.0,
    description="32x32, G ~3M parameters: faces emerge within an hour on 2 CPU cores.",
))
_register(GANConfig(
    name="stylegan2-64-cpu", resolution=64, channel_base=4096, channel_max=512,
    channel_overrides={"32": 64, "64": 32}, z_dim=512, w_dim=512, mapping_layers=8, batch=32,
    r1_gamma=0.05, ema_kimg=5.0, snapshot_kimg=5.0,
    description="64x64, G ~13M parameters, capacity at 4-16 px and thin 32-64 px layers: fast on a CPU.",
))
_register(GANConfig(
    name="stylegan2-64-paper", resolution=64, channel_base=16384, channel_max=512, batch=64,
    r1_gamma=0.05, ema_kimg=10.0, snapshot_kimg=200.0,
    description="64x64 at the StyleGAN2-ADA 'paper' capacity; for GPUs.",
))
_register(GANConfig(
    name="stylegan2-128-paper", resolution=128, channel_base=16384, channel_max=512, batch=64,
    r1_gamma=0.1, ema_kimg=10.0, snapshot_kimg=200.0,
    description="128x128 at 'paper' capacity; for GPUs.",
))
_register(GANConfig(
    name="stylegan2-256-paper", resolution=256, channel_base=16384, channel_max=512, batch=64,
    r1_gamma=1.0, ema_kimg=20.0, snapshot_kimg=200.0,
    description="256x256 at StyleGAN2-ADA's 'paper256' capacity (G ~24M); for GPUs.",
))
_register(GANConfig(
    name="stylegan2-1024-paper", resolution=1024, channel_base=32768, channel_max=512, batch=32,
    r1_gamma=10.0, pl_weight=2.0, ema_kimg=10.0, snapshot_kimg=200.0,
    description="1024x1024 StyleGAN2 config F (FFHQ); for multi-GPU machines.",
))


def get_preset(name: str) -> GANConfig:
    try:
        return PRESETS[name]
    except KeyError:
        raise FacesynthError(f"unknown preset {name!r}; known presets: {', '.join(PRESETS)}") from None


def parameter_counts(cfg: GANConfig) -> dict[str, int]:
    from .nets.discriminator import Discriminator
    from .nets.stylegan2 import Generator

    g, d = Generator(cfg), Discriminator(cfg)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    return {"G": count(g), "G.mapping": count(g.mapping), "D": count(d)}


__all__ = ["GANConfig", "PRESETS", "get_preset", "parameter_counts"]
