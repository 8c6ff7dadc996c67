"""Named model-and-training configurations.

A preset fixes the architecture (resolution x capacity) and the training
hyper-parameters that go with it.  Every snapshot stores the full config so a
checkpoint always rebuilds its own networks, whatever the presets become later.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field, fields
from pathlib import Path

from .errors import FacesynthError

# Sanity limits: a config outside them is refused before any tensor is allocated.
MAX_RESOLUTION = 4096
MAX_CHANNELS = 4096
MAX_DIM = 4096
MAX_BATCH = 2**16
MAX_TEXT = 10_000  # characters in a name or description
MAX_CONFIG_BYTES = 2**20


def _type_problem(value, kind: str) -> str | None:
    """Why ``value`` is not of the annotated ``kind`` (the dataclass field's type, as text), or None."""
    kinds = [k.strip() for k in str(kind).split("|")]
    if value is None:
        return None if "None" in kinds else "must not be null"
    for k in kinds:
        if k == "bool" and isinstance(value, bool):
            return None
        if k == "int" and isinstance(value, int) and not isinstance(value, bool):
            return None
        if k == "float" and isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                return None if math.isfinite(value) else "must be a finite number"
            except OverflowError:
                return "must be a finite number"
        if k == "str" and isinstance(value, str):
            return None if len(value) <= MAX_TEXT else f"is longer than {MAX_TEXT} characters"
        if k in ("dict", "list") and type(value).__name__ == k:
            return None
    names = {"int": "a whole number", "float": "a number", "bool": "true or false", "str": "a string",
             "dict": "an object", "list": "a list", "None": "null"}
    return f"must be {' or '.join(names.get(k, k) for k in kinds)}, got {type(value).__name__} {str(value)[:40]!r}"


class JsonConfig:
    """(De)serialisation shared by the frozen config dataclasses: exact keys, validated on the way in."""

    def validate(self, source: str = "config"):
        return self.check_types(source)

    def check_types(self, source: str = "config"):
        """Every field holds a value of its declared type: numbers finite, no strings or bools for numbers."""
        for f in fields(self):
            problem = _type_problem(getattr(self, f.name), f.type)
            if problem:
                raise FacesynthError(f"{source}: {f.name} {problem}")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict, source: str = "config"):
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

    def replace(self, **changes):
        unknown = sorted(set(changes) - {f.name for f in fields(self)})
        if unknown:
            raise FacesynthError(f"unknown config keys {unknown} (known: {', '.join(f.name for f in fields(self))})")
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class GANConfig(JsonConfig):
    """Architecture and training hyper-parameters of one GAN model."""

    name: str = "custom"
    # stylegan2: modulated/demodulated convs, skip G, residual D.  stylegan1: AdaIN + noise, plain D.
    # progan: pixel norm, no mapping network (mapping_layers=0), plain D.
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
    mbstd_channels: int = 1  # feature maps the minibatch standard deviation adds (0: none)
    # StyleGAN2's network forms (stylegan2-ada-pytorch's "architecture"): G "skip" (a toRGB at every resolution,
    # summed), "resnet" (residual blocks, one toRGB at the top) or "orig" (plain blocks, one toRGB); D "resnet",
    # "skip" (the image read at every resolution) or "orig".  The presets use skip G and resnet D (config F);
    # imported models keep their own.
    g_architecture: str = "skip"
    d_architecture: str = "resnet"
    # Convolution outputs clamped to +-conv_clamp: stylegan2-ada's guard for float16 layers, and part of the
    # function its models compute, so imported models keep it.
    conv_clamp: float | None = None
    # Class-conditional models: c_dim classes given as one-hot labels, embedded into the mapping's input.  D
    # projects its output onto the label mapped by d_mapping_layers layers to d_cmap_dim features (default:
    # its 4x4 channel count).
    c_dim: int = 0
    d_cmap_dim: int | None = None
    d_mapping_layers: int = 8
    d_mapping_lr_multiplier: float = 0.01
    # Training
    loss: str = "logistic"  # "logistic" (non-saturating, R1) or "wgan-gp" (ProGAN: gradient penalty + drift)
    gp_lambda: float = 10.0
    drift_weight: float = 0.001  # epsilon * D(real)^2 keeps WGAN critic outputs near zero
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
    # Progressive growing (ProGAN): a stable phase at start_resolution, then for each higher resolution a
    # fade-in phase (alpha 0 -> 1) and a stable phase.  Batch size and learning rate may differ per
    # resolution (keys are resolutions as strings, as in JSON).
    progressive: bool = False
    start_resolution: int = 4
    fade_kimg: float = 600.0
    stable_kimg: float = 600.0
    batch_per_res: dict = field(default_factory=dict)
    lr_per_res: dict = field(default_factory=dict)
    reset_adam_on_grow: bool = True
    # How the training faces were cropped (see data/align.py FRAMINGS): photos are aligned the same way
    # before projection.
    framing: str = "ffhq"
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
        return self.num_ws_at(self.resolution)

    def num_ws_at(self, res: int) -> int:
        """How many w's a model of this kind uses up to resolution ``res``.

        StyleGAN2: one per convolution plus one for the last toRGB (the others share the next conv's).
        StyleGAN1: one per AdaIN, two per resolution.  ProGAN: the single (normalised) latent.
        """
        if self.arch == "progan":
            return 1
        return 2 * int(math.log2(res)) - 2

    def batch_at(self, res: int) -> int:
        return int(self.batch_per_res.get(str(res), self.batch))

    def lr_at(self, res: int) -> tuple[float, float]:
        """(G, D) learning rates at a resolution: lr_per_res overrides both when it names the resolution."""
        lr = self.lr_per_res.get(str(res))
        return (self.g_lr, self.d_lr) if lr is None else (float(lr), float(lr))

    def validate(self, source: str = "config") -> "GANConfig":
        def bad(msg: str) -> FacesynthError:
            return FacesynthError(f"{source}: {msg}")

        self.check_types(source)
        r = self.resolution
        if not isinstance(r, int) or r < 4 or r > MAX_RESOLUTION or (r & (r - 1)) != 0:
            raise bad(f"resolution must be a power of two between 4 and {MAX_RESOLUTION}, got {r!r}")
        if self.arch not in ARCHS:
            raise bad(f"unknown arch {self.arch!r} (known: {', '.join(ARCHS)})")
        if self.loss not in LOSSES:
            raise bad(f"unknown loss {self.loss!r} (known: {', '.join(LOSSES)})")
        for name in ("channel_base", "channel_max", "z_dim", "w_dim", "batch", "image_channels"):
            v = getattr(self, name)
            if not isinstance(v, int) or v <= 0:
                raise bad(f"{name} must be a positive integer, got {v!r}")
        if not isinstance(self.mapping_layers, int) or self.mapping_layers < 0:
            raise bad(f"mapping_layers must be a non-negative integer, got {self.mapping_layers!r}")
        if self.mapping_layers == 0 and self.w_dim != self.z_dim:
            raise bad("without mapping layers w is the normalised z, so w_dim must equal z_dim")
        self._validate_growth(bad)
        from .data.align import FRAMINGS

        if self.framing not in FRAMINGS:
            raise bad(f"unknown framing {self.framing!r} (known: {', '.join(FRAMINGS)})")
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
        self._validate_forms(bad)
        self._validate_ranges(bad)
        return self

    def _validate_forms(self, bad) -> None:
        """The StyleGAN2 network forms, clamping, minibatch-stddev channels and class conditioning."""
        if self.g_architecture not in G_ARCHITECTURES or self.d_architecture not in D_ARCHITECTURES:
            raise bad(f"g_architecture must be one of {', '.join(G_ARCHITECTURES)} and d_architecture one of "
                      f"{', '.join(D_ARCHITECTURES)}; got {self.g_architecture!r}, {self.d_architecture!r}")
        forms_changed = (self.g_architecture, self.d_architecture) != (G_ARCHITECTURES[0], D_ARCHITECTURES[0])
        if forms_changed and self.arch != "stylegan2":
            raise bad("g_architecture and d_architecture are forms of stylegan2's networks")
        if forms_changed and self.progressive:
            raise bad("progressive growing needs the skip generator and resnet discriminator")
        if self.conv_clamp is not None and not 0 < self.conv_clamp <= 1e9:
            raise bad(f"conv_clamp must be null or a positive number, got {self.conv_clamp!r}")
        m = self.mbstd_channels
        if not 0 <= m <= MAX_CHANNELS or (m and self.channels_at(4) % m):
            raise bad(f"mbstd_channels must be 0 or divide the {self.channels_at(4)} channels at 4x4, got {m!r}")
        if not 0 <= self.c_dim <= MAX_DIM:
            raise bad(f"c_dim must be from 0 to {MAX_DIM}, got {self.c_dim!r}")
        if self.c_dim and (self.arch != "stylegan2" or self.mapping_layers == 0):
            raise bad("class conditioning (c_dim > 0) needs stylegan2 with a mapping network")
        if self.d_cmap_dim is not None and not 1 <= self.d_cmap_dim <= MAX_DIM:
            raise bad(f"d_cmap_dim must be null or from 1 to {MAX_DIM}, got {self.d_cmap_dim!r}")
        if not 0 <= self.d_mapping_layers <= 32:
            raise bad(f"d_mapping_layers must be from 0 to 32, got {self.d_mapping_layers!r}")

    def _validate_ranges(self, bad) -> None:
        """Every other number within what training and inference can use (types are checked already)."""
        if self.channel_base > MAX_CHANNELS * MAX_RESOLUTION:
            raise bad(f"channel_base must be at most {MAX_CHANNELS * MAX_RESOLUTION}, got {self.channel_base}")
        if self.batch > MAX_BATCH:
            raise bad(f"batch must be at most {MAX_BATCH}, got {self.batch}")
        for name in ("mbstd_group", "r1_interval", "pl_interval", "pl_batch_shrink"):
            v = getattr(self, name)
            if not 1 <= v <= MAX_BATCH:
                raise bad(f"{name} must be a whole number from 1 to {MAX_BATCH}, got {v!r}")
        for name in ("g_lr", "d_lr", "mapping_lr_multiplier", "d_mapping_lr_multiplier", "snapshot_kimg"):
            v = getattr(self, name)
            if not 0 < v <= 1e6:
                raise bad(f"{name} must be positive (and at most 1e6), got {v!r}")
        for name in ("gp_lambda", "drift_weight", "r1_gamma", "pl_weight", "ema_kimg", "fade_kimg", "stable_kimg"):
            v = getattr(self, name)
            if not 0 <= v <= 1e9:
                raise bad(f"{name} must be from 0 to 1e9, got {v!r}")
        for name in ("pl_decay", "style_mixing_prob", "w_avg_beta"):
            v = getattr(self, name)
            if not 0 <= v <= 1:
                raise bad(f"{name} must be from 0 to 1, got {v!r}")
        if self.ema_rampup is not None and not 0 <= self.ema_rampup <= 1e6:
            raise bad(f"ema_rampup must be null or from 0 to 1e6, got {self.ema_rampup!r}")
        for name in ("batch_per_res", "lr_per_res"):
            for k, v in getattr(self, name).items():
                if isinstance(v, bool) or (name == "batch_per_res" and v > MAX_BATCH) or (
                        name == "lr_per_res" and not (isinstance(v, (int, float)) and math.isfinite(v) and v <= 1e6)):
                    raise bad(f"{name}[{k!r}] is out of range: {v!r}")

    def _validate_growth(self, bad) -> None:
        s = self.start_resolution
        if not isinstance(s, int) or s < 4 or s > self.resolution or (s & (s - 1)) != 0:
            raise bad(f"start_resolution must be a power of two between 4 and {self.resolution}, got {s!r}")
        if self.progressive and not (self.fade_kimg > 0 and self.stable_kimg > 0):
            raise bad("progressive growing needs positive fade_kimg and stable_kimg")
        for name in ("batch_per_res", "lr_per_res"):
            table = getattr(self, name)
            if not isinstance(table, dict):
                raise bad(f"{name} must be an object mapping resolutions to values")
            for k, v in table.items():
                if str(k) not in {str(b) for b in self.block_resolutions}:
                    raise bad(f"{name} names resolution {k!r}, which this {self.resolution}x{self.resolution} "
                              "model does not have")
                ok = isinstance(v, int) and v > 0 if name == "batch_per_res" else isinstance(v, (int, float)) and v > 0
                if not ok:
                    raise bad(f"{name}[{k!r}] must be positive, got {v!r}")


ARCHS = ("stylegan2", "stylegan1", "progan")
G_ARCHITECTURES = ("skip", "resnet", "orig")  # the first of each is the default
D_ARCHITECTURES = ("resnet", "skip", "orig")
LOSSES = ("logistic", "wgan-gp")
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
    name="stylegan2-64-lite", resolution=64, channel_base=2048, channel_max=256, z_dim=256, w_dim=256,
    mapping_layers=4, batch=32, r1_gamma=0.025, ema_kimg=5.0, snapshot_kimg=2.0,
    progressive=True, start_resolution=32, fade_kimg=4.0, stable_kimg=2.0,
    description="64x64, G ~3M parameters: stylegan2-32-cpu plus a thin 64x64 block, grown from a trained "
                "32x32 run with --init-from (the model that ships with facesynth).",
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

# ProGAN and StyleGAN (v1), grown progressively from 4x4.  CPU presets: 256 channels at 4-8 px, then
# 128, 64, 32 (512-channel layers cost as much at 4-8 px as the whole 64x64 top does), 3 kimg per
# phase: 64x64 is reached after 27 kimg (under an hour on 2 cores) and trained at until --kimg.
# Batch 16 gives each short phase enough steps (~190 per phase) to learn in.
_CPU_64 = dict(resolution=64, channel_base=4096, channel_max=256, channel_overrides={"16": 128, "32": 64, "64": 32},
               progressive=True, start_resolution=4, fade_kimg=3.0, stable_kimg=3.0, batch=16,
               g_lr=0.002, d_lr=0.002, ema_kimg=5.0, snapshot_kimg=3.0)
# The papers' schedules: 600k images per phase; ProGAN batch 16 up to 128x128 and fewer above it
# (CelebA-HQ); StyleGAN from 8x8 with its per-resolution batch and learning-rate tables (FFHQ, 8 GPUs).
_PROGAN_PAPER = dict(arch="progan", loss="wgan-gp", z_dim=512, w_dim=512, mapping_layers=0, g_lr=0.001,
                     d_lr=0.001, style_mixing_prob=0.0, r1_gamma=0.0, ema_kimg=10.0, snapshot_kimg=100.0,
                     channel_base=16384, channel_max=512, progressive=True, fade_kimg=600.0, stable_kimg=600.0,
                     batch=16, batch_per_res={"256": 14, "512": 6, "1024": 3})
_STYLEGAN1_PAPER = dict(arch="stylegan1", z_dim=512, w_dim=512, mapping_layers=8, g_lr=0.001, d_lr=0.001,
                        r1_gamma=10.0, r1_interval=1, ema_kimg=10.0, snapshot_kimg=100.0, channel_base=16384,
                        channel_max=512, progressive=True, start_resolution=8, fade_kimg=600.0,
                        stable_kimg=600.0, batch=32,
                        batch_per_res={"8": 256, "16": 128, "32": 64, "64": 32, "128": 16, "256": 8, "512": 4,
                                       "1024": 4},
                        lr_per_res={"128": 0.0015, "256": 0.002, "512": 0.003, "1024": 0.003})


def _paper(base: dict, resolution: int, **changes) -> dict:
    """A paper configuration at one resolution: its per-resolution tables cut to the model's resolutions."""
    cfg = {**base, **changes, "resolution": resolution}
    for key in ("batch_per_res", "lr_per_res"):
        cfg[key] = {k: v for k, v in cfg.get(key, {}).items() if int(k) <= resolution}
    return cfg


_register(GANConfig(
    name="progan-64", arch="progan", loss="wgan-gp", z_dim=512, w_dim=512, mapping_layers=0,
    style_mixing_prob=0.0, r1_gamma=0.0, **_CPU_64,
    description="ProGAN grown 4->64: pixel norm, WGAN-GP + drift; CPU-sized.",
))
_register(GANConfig(
    name="stylegan1-64", arch="stylegan1", z_dim=512, w_dim=512, mapping_layers=8, r1_gamma=1.0, **_CPU_64,
    description="StyleGAN v1 grown 4->64: AdaIN, noise, const input, mixing reg, R1; CPU-sized.",
))
_register(GANConfig(
    name="progan-32-paper", **_paper(_PROGAN_PAPER, 32),
    description="ProGAN at the paper's capacity (512 channels) up to 32x32: G 20.7M.",
))
_register(GANConfig(
    name="progan-256-paper", **_paper(_PROGAN_PAPER, 256),
    description="ProGAN 256x256 at the paper's capacity and schedule; for GPUs.",
))
_register(GANConfig(
    name="progan-1024-paper", **_paper(_PROGAN_PAPER, 1024),
    description="ProGAN CelebA-HQ 1024x1024 (G 23M) with the paper's schedule; for multi-GPU machines.",
))
_register(GANConfig(
    name="stylegan1-256-paper", **_paper(_STYLEGAN1_PAPER, 256),
    description="StyleGAN v1 256x256 at the paper's capacity and schedule; for GPUs.",
))
_register(GANConfig(
    name="stylegan1-1024-paper", **_paper(_STYLEGAN1_PAPER, 1024),
    description="StyleGAN v1 FFHQ 1024x1024 (G 26.2M) with the paper's schedule; for multi-GPU machines.",
))


def get_preset(name: str) -> GANConfig:
    """A named preset, or the GANConfig in a JSON file when ``name`` ends in .json."""
    if str(name).lower().endswith(".json"):
        return load_config_file(name)
    try:
        return PRESETS[name]
    except KeyError:
        raise FacesynthError(f"unknown preset {name!r}; known presets: {', '.join(PRESETS)} "
                             "(or the path of a config .json file)") from None


def load_config_file(path: str | os.PathLike) -> GANConfig:
    """A GANConfig from a JSON object of its fields; fields left out keep their defaults, ``name`` the file's stem.

    Write one with ``facesynth presets --json`` (every preset's full config) and edit it.
    """
    path = Path(path)
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise FacesynthError(f"{path}: {path.stat().st_size} bytes is far too large for a config file")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FacesynthError(f"{path}: no such config file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise FacesynthError(f"{path}: cannot read the config file ({getattr(e, 'strerror', None) or e})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise FacesynthError(f"{path}: not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})") from None
    except RecursionError:
        raise FacesynthError(f"{path}: not valid JSON (nested too deeply)") from None
    if isinstance(data, dict) and "name" not in data:
        data = {**data, "name": path.stem}
    return GANConfig.from_dict(data, source=str(path))


def parameter_counts(cfg: GANConfig) -> dict[str, int]:
    from .nets import build_discriminator, build_generator

    g, d = build_generator(cfg), build_discriminator(cfg)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    return {"G": count(g), "G.mapping": count(g.mapping), "D": count(d)}


__all__ = ["JsonConfig", "GANConfig", "PRESETS", "get_preset", "load_config_file", "parameter_counts"]
