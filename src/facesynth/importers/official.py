"""stylegan2-ada-pytorch's networks, as names and constructor arguments, turned into facesynth's.

Every foreign format is first brought into the layout of NVIDIA's PyTorch code (``OfficialNetwork``: the
``init_kwargs`` its Generator or Discriminator was built with, and its ``state_dict`` names such as
``synthesis.b64.conv0.affine.weight``); this module is the one place that maps that layout onto a
``GANConfig`` and facesynth's tensor names.  The networks compute the same function: the same equalized-lr
layers, the same FIR filters and paddings, and the forms (skip / resnet / orig), conv_clamp, minibatch-stddev
channels and class conditioning are built, not approximated.  What facesynth cannot compute is refused.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import torch

from ..config import GANConfig
from ..errors import FacesynthError

# The only resampling filter facesynth's layers use: [1, 3, 3, 1] outer product, unit DC gain.
_FIR = torch.tensor([1.0, 3.0, 3.0, 1.0])
DEFAULT_FIR = torch.outer(_FIR, _FIR) / 64.0


@dataclass
class OfficialNetwork:
    """One network in stylegan2-ada-pytorch's layout: its class, constructor kwargs and named tensors."""

    class_name: str  # "Generator" or "Discriminator"
    kwargs: dict
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)


class Refused(FacesynthError):
    """The file is read, but facesynth cannot compute what its network computes."""


def _sub(kwargs: dict, key: str) -> dict:
    value = kwargs.get(key) or {}
    if not isinstance(value, dict):
        raise Refused(f"{key} is a {type(value).__name__}, not a set of arguments")
    return value


def _check_common(where: str, activation=None, resample_filter=None) -> None:
    if activation not in (None, "lrelu"):
        raise Refused(f"{where} uses activation {activation!r}; facesynth's StyleGAN2 layers use lrelu")
    if resample_filter is not None and [float(v) for v in resample_filter] != [1.0, 3.0, 3.0, 1.0]:
        raise Refused(f"{where} resamples with the filter {list(resample_filter)}; facesynth's layers use "
                      "[1, 3, 3, 1]")


# Constructor arguments that change how fast or in which precision a network runs, not what it computes
# (the references are computed in float32, as facesynth computes on a CPU).
_SPEED_ONLY = {"num_fp16_res", "fp16_channels_last", "freeze_layers"}


def _unknown(where: str, given: dict, known: set) -> None:
    extra = sorted(set(given) - known - _SPEED_ONLY)
    if extra:
        raise Refused(f"{where} has arguments facesynth does not know: {', '.join(map(str, extra))}")


def generator_config(kw: dict) -> dict:
    """GANConfig fields for a stylegan2-ada Generator's init kwargs (its defaults where one is absent)."""
    _unknown("the generator", kw, {"z_dim", "c_dim", "w_dim", "img_resolution", "img_channels",
                                    "mapping_kwargs", "synthesis_kwargs"})
    mk, sk = _sub(kw, "mapping_kwargs"), _sub(kw, "synthesis_kwargs")
    _unknown("the generator's mapping", mk, {"num_layers", "embed_features", "layer_features", "activation",
                                             "lr_multiplier", "w_avg_beta"})
    _unknown("the generator's synthesis", sk, {"channel_base", "channel_max", "conv_clamp", "architecture",
                                               "resample_filter", "use_noise", "activation"})
    _check_common("the generator", sk.get("activation"), sk.get("resample_filter"))
    _check_common("the generator's mapping", mk.get("activation"))
    w_dim, c_dim = int(kw.get("w_dim", 512)), int(kw.get("c_dim", 0))
    for name in ("embed_features", "layer_features"):
        if mk.get(name) not in (None, w_dim):
            raise Refused(f"the generator's mapping has {name}={mk[name]}, not w_dim ({w_dim})")
    beta = mk.get("w_avg_beta", 0.995)
    return dict(
        resolution=int(kw["img_resolution"]), image_channels=int(kw.get("img_channels", 3)),
        z_dim=int(kw.get("z_dim", 512)), w_dim=w_dim, c_dim=c_dim,
        mapping_layers=int(mk.get("num_layers", 8)), mapping_lr_multiplier=float(mk.get("lr_multiplier", 0.01)),
        w_avg_beta=float(beta) if beta is not None else 1.0,
        channel_base=int(sk.get("channel_base", 32768)), channel_max=int(sk.get("channel_max", 512)),
        conv_clamp=None if sk.get("conv_clamp") is None else float(sk["conv_clamp"]),
        g_architecture=str(sk.get("architecture", "skip")),
    )


def discriminator_config(kw: dict) -> dict:
    """GANConfig fields for a stylegan2-ada Discriminator's init kwargs."""
    _unknown("the discriminator", kw, {"c_dim", "img_resolution", "img_channels", "architecture", "channel_base",
                                        "channel_max", "conv_clamp", "cmap_dim", "block_kwargs", "mapping_kwargs",
                                        "epilogue_kwargs"})
    bk, mk, ek = _sub(kw, "block_kwargs"), _sub(kw, "mapping_kwargs"), _sub(kw, "epilogue_kwargs")
    _unknown("the discriminator's blocks", bk, {"activation", "resample_filter"})
    _unknown("the discriminator's mapping", mk, {"num_layers", "embed_features", "layer_features", "activation",
                                                 "lr_multiplier"})
    _unknown("the discriminator's epilogue", ek, {"mbstd_group_size", "mbstd_num_channels", "activation"})
    _check_common("the discriminator", bk.get("activation"), bk.get("resample_filter"))
    _check_common("the discriminator's epilogue", ek.get("activation"))
    _check_common("the discriminator's mapping", mk.get("activation"))
    c_dim = int(kw.get("c_dim", 0))
    channel_base, channel_max = int(kw.get("channel_base", 32768)), int(kw.get("channel_max", 512))
    cmap_dim = kw.get("cmap_dim")
    if c_dim:
        cmap = int(cmap_dim) if cmap_dim is not None else min(channel_base // 4, channel_max)
        for name in ("embed_features", "layer_features"):
            if mk.get(name) not in (None, cmap):
                raise Refused(f"the discriminator's mapping has {name}={mk[name]}, not cmap_dim ({cmap})")
    group = ek.get("mbstd_group_size", 4)
    return dict(
        resolution=int(kw["img_resolution"]), image_channels=int(kw.get("img_channels", 3)), c_dim=c_dim,
        channel_base=channel_base, channel_max=channel_max,
        conv_clamp=None if kw.get("conv_clamp") is None else float(kw["conv_clamp"]),
        d_architecture=str(kw.get("architecture", "resnet")),
        d_cmap_dim=int(cmap_dim) if cmap_dim is not None and c_dim else None,
        d_mapping_layers=int(mk.get("num_layers", 8)), d_mapping_lr_multiplier=float(mk.get("lr_multiplier", 0.01)),
        # No group size means the whole minibatch, which a group as large as any batch gives.
        mbstd_group=int(group) if group is not None else 2**16,
        mbstd_channels=int(ek.get("mbstd_num_channels", 1)),
    )


def build_config(networks: dict[str, OfficialNetwork], name: str, description: str) -> GANConfig:
    """One GANConfig for the generator(s) and, when present, the discriminator of an imported file."""
    gen = networks.get("G_ema") or networks.get("G")
    if gen is None:
        raise FacesynthError("the file holds no generator")
    fields_ = generator_config(gen.kwargs)
    disc = networks.get("D")
    if disc is not None:
        d_fields = discriminator_config(disc.kwargs)
        for key in ("resolution", "image_channels", "c_dim", "channel_base", "channel_max", "conv_clamp"):
            if d_fields[key] != fields_[key]:
                raise Refused(f"its generator and discriminator differ in {key} ({fields_[key]} against "
                              f"{d_fields[key]}); facesynth describes both with one config")
        fields_.update(d_fields)
    res = fields_["resolution"]
    batch = 32
    cfg = GANConfig(
        name=name, arch="stylegan2", description=description, batch=batch,
        # Fine-tuning defaults as stylegan2-ada's 'auto' configuration: R1 weight from resolution and batch.
        r1_gamma=round(0.0002 * res * res / batch, 6), ema_kimg=batch * 10 / 32, style_mixing_prob=0.9,
        **fields_)
    try:
        return cfg.validate(f"{name}")
    except FacesynthError as e:
        raise Refused(f"facesynth cannot describe this network: {e}") from None


# --------------------------------------------------------------------------- tensor names

def _block_index(res: str) -> int:
    return int(math.log2(int(res))) - 2


def _check_filter(name: str, t: torch.Tensor) -> None:
    if t.shape != DEFAULT_FIR.shape or not torch.allclose(t.float(), DEFAULT_FIR, atol=1e-6):
        raise Refused(f"{name} is not the [1, 3, 3, 1] resampling filter facesynth's layers use")


def _mapping_or_filter(name: str, t: torch.Tensor, out: dict) -> bool:
    """Handle what G and D name alike: the mapping layers (into ``out``) and the fixed resampling filters
    (checked, then dropped).  False for any other tensor."""
    if name.endswith("resample_filter"):
        _check_filter(name, t)
        return True
    m = re.fullmatch(r"mapping\.fc(\d+)\.(weight|bias)", name)
    if m:
        out[f"mapping.layers.{m[1]}.{m[2]}"] = t
        return True
    if name in ("mapping.w_avg", "mapping.embed.weight", "mapping.embed.bias"):
        out[name] = t
        return True
    return False


def generator_tensors(net: OfficialNetwork, cfg: GANConfig) -> dict[str, torch.Tensor]:
    """facesynth names and layouts for a stylegan2-ada Generator's tensors."""
    out = {}
    for name, t in net.tensors.items():
        if _mapping_or_filter(name, t, out):
            continue
        m = re.fullmatch(r"synthesis\.b(\d+)\.(.+)", name)
        if not m:
            raise Refused(f"the generator holds {name}, which facesynth's networks have no place for")
        out[f"synthesis.blocks.{_block_index(m[1])}.{_synthesis_name(m[2], t, name)}"] = _synthesis_value(
            m[2], t, cfg.channels_at(int(m[1])))
    if not any(k.endswith("noise.strength") for k in out):
        _no_noise(out, cfg)
    return out


def _synthesis_name(rest: str, t: torch.Tensor, full: str) -> str:
    m = re.fullmatch(r"(conv[01])\.(weight|affine\.weight|affine\.bias|bias|noise_strength|noise_const)", rest)
    if m:
        layer, what = m[1], m[2]
        return {"weight": f"{layer}.conv.weight", "affine.weight": f"{layer}.conv.affine.weight",
                "affine.bias": f"{layer}.conv.affine.bias", "bias": f"{layer}.bias",
                "noise_strength": f"{layer}.noise.strength", "noise_const": f"{layer}.noise.const_noise"}[what]
    m = re.fullmatch(r"torgb\.(weight|affine\.weight|affine\.bias|bias)", rest)
    if m:
        return {"weight": "torgb.conv.weight", "affine.weight": "torgb.conv.affine.weight",
                "affine.bias": "torgb.conv.affine.bias", "bias": "torgb.bias"}[m[1]]
    if rest in ("const", "skip.weight"):
        return rest
    raise Refused(f"the generator holds {full}, which facesynth's networks have no place for")


def _synthesis_value(rest: str, t: torch.Tensor, channels: int) -> torch.Tensor:
    if rest.endswith("noise_strength"):  # one strength for all channels: a per-channel vector of equal values
        return t.reshape(()).expand(channels).clone()
    if rest.endswith("noise_const"):
        return t.reshape(1, 1, *t.shape[-2:])
    return t


def _no_noise(out: dict, cfg: GANConfig) -> None:
    """A generator built without noise inputs (use_noise=False) computes what zero noise strengths do."""
    from ..nets import build_generator

    with torch.device("meta"):
        own = build_generator(cfg).state_dict()
    for k, v in own.items():
        if k.endswith("noise.strength"):
            out[k] = torch.zeros(v.shape)
        elif k.endswith("noise.const_noise"):
            out[k] = torch.zeros(v.shape)


def discriminator_tensors(net: OfficialNetwork, cfg: GANConfig) -> dict[str, torch.Tensor]:
    """facesynth names for a stylegan2-ada Discriminator's tensors."""
    top = cfg.resolution
    out = {}
    for name, t in net.tensors.items():
        if name != "mapping.w_avg" and _mapping_or_filter(name, t, out):
            continue
        m = re.fullmatch(r"b(\d+)\.(fromrgb|conv0|conv1|skip|conv|fc|out)\.(weight|bias)", name)
        if not m:
            raise Refused(f"the discriminator holds {name}, which facesynth's networks have no place for")
        res, layer, what = int(m[1]), m[2], m[3]
        if layer == "fromrgb":
            key = "fromrgb" if res == top else f"fromrgb_skip.{res}"
        elif layer in ("conv", "fc", "out"):
            key = f"epilogue.{layer}"
        else:
            key = f"blocks.{int(math.log2(top // res))}.{layer}"
        out[f"{key}.{what}"] = t
    return out


def facesynth_tensors(networks: dict[str, OfficialNetwork], cfg: GANConfig) -> dict[str, torch.Tensor]:
    """Every network of the file under facesynth's prefixes (G, G_ema, D), float32 and contiguous."""
    out = {}
    for prefix, net in networks.items():
        convert = discriminator_tensors if prefix == "D" else generator_tensors
        for k, v in convert(net, cfg).items():
            out[f"{prefix}.{k}"] = v.detach().to(torch.float32).contiguous()
    return out
