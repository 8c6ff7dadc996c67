"""The config dataclasses that rebuild networks: GANConfig and the JSON (de)serialisation all configs share.

Every checkpoint stores its config, so a model file rebuilds its own networks; this module knows no
networks itself (nets/ import it), so reading and validating a config never builds one.
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
MAX_BATCH = 2**16
MAX_TEXT = 10_000  # characters in a name or description

ARCHS = ("stylegan2", "stylegan1", "progan")
G_ARCHITECTURES = ("skip", "resnet", "orig")  # the first of each is the default
D_ARCHITECTURES = ("resnet", "skip", "orig")
LOSSES = ("logistic", "wgan-gp", "hinge")
DISCRIMINATORS = ("native", "projected", "projected+native")
# Seeds become latents through numpy's RandomState, which takes no larger seed: every command and the web API take
# this range.
SEED_MIN, SEED_MAX = 0, 2**32 - 1
DIFFAUGMENT_POLICIES = ("color", "translation", "cutout")


def parse_diffaugment(text) -> tuple[str, ...]:
    """A DiffAugment policy ("color,translation,cutout", or a sequence of those names) as a tuple of names."""
    names = tuple(p.strip() for p in (text.split(",") if isinstance(text, str) else text) if p.strip())
    unknown = sorted(set(names) - set(DIFFAUGMENT_POLICIES))
    if unknown:
        raise ValueError(f"unknown DiffAugment policy {unknown} (known: {', '.join(DIFFAUGMENT_POLICIES)})")
    return names


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
    # "native": the architecture's own discriminator; "projected": small discriminators on frozen ImageNet
    # features (Sauer et al. 2021; the G stays the architecture's); "projected+native": both, each with its
    # share of the loss, R1 on the native one only.
    discriminator: str = "native"
    projected_resolution: int | None = None  # side at which the projected D's feature network reads images
    # "logistic" (non-saturating, R1), "wgan-gp" (ProGAN: gradient penalty + drift) or "hinge" (projected GANs)
    loss: str = "logistic"
    # Augmentation of every image D sees: DiffAugment's policy ("color,translation,cutout"; "" = none) and ADA's
    # adaptive probability for the bgc pipeline (target of r_t = E[sign D(real)]; null = off).
    diffaugment: str = ""
    ada_target: float | None = None
    ada_kimg: float = 500.0  # images (thousands) for ADA's p to move from 0 to 1
    # Fine-tuning (Mo et al. 2020, FreezeD): the first freeze_d discriminator blocks from the image side (with
    # their fromRGB layers) keep the weights the run started from.
    freeze_d: int = 0
    # Fine-tuning from a model without its discriminator (an exported one): D alone trains for this many
    # thousand images first, so G's first updates follow a D that knows the data instead of a random one.
    d_warmup_kimg: float = 0.0
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
        self._validate_augmentation(bad)
        self._validate_ranges(bad)
        return self

    def _validate_augmentation(self, bad) -> None:
        if self.discriminator not in DISCRIMINATORS:
            raise bad(f"discriminator must be one of {', '.join(DISCRIMINATORS)}, got {self.discriminator!r}")
        pr = self.projected_resolution
        if pr is not None and not 32 <= pr <= 1024:
            raise bad(f"projected_resolution must be null or from 32 to 1024, got {pr!r}")
        if self.discriminator != "native" and (self.progressive or self.loss == "wgan-gp"):
            raise bad("the projected discriminator is trained at full resolution with the hinge or logistic loss")
        try:
            parse_diffaugment(self.diffaugment)
        except ValueError as e:
            raise bad(str(e)) from None
        if self.ada_target is not None and not 0 < self.ada_target < 1:
            raise bad(f"ada_target must be null or between 0 and 1, got {self.ada_target!r}")
        if not 0 < self.ada_kimg <= 1e9:
            raise bad(f"ada_kimg must be positive, got {self.ada_kimg!r}")
        blocks = len(self.block_resolutions) - 1
        if not 0 <= self.freeze_d <= blocks or (self.freeze_d and (self.discriminator == "projected" or self.progressive)):
            raise bad(f"freeze_d must be from 0 to the discriminator's {blocks} blocks, for a discriminator with "
                      f"native blocks, trained at full resolution; got {self.freeze_d!r}")

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
        for name in ("gp_lambda", "drift_weight", "r1_gamma", "pl_weight", "ema_kimg", "fade_kimg", "stable_kimg",
                     "d_warmup_kimg"):
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


__all__ = ["JsonConfig", "GANConfig", "ARCHS", "LOSSES", "DISCRIMINATORS", "G_ARCHITECTURES", "D_ARCHITECTURES",
           "MAX_RESOLUTION",
           "MAX_CHANNELS", "MAX_DIM", "MAX_BATCH", "MAX_TEXT"]
