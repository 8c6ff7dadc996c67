"""Starting a run from another run's weights.

Either the same networks (fine-tuning on new data), or a model of a lower resolution
from the same family grown by new top blocks: the generator's blocks are numbered from
4x4 up, so their names carry over; the discriminator's are numbered from the input
down, so each old block moves down by one place per doubling, and the old input layer
becomes the fromRGB of the resolution below (faded out by progressive growing).
"""

from __future__ import annotations

import math
import re
import sys

import torch
from torch import nn

from .. import checkpoints as ckpt
from ..config import GANConfig
from ..errors import FacesynthError

# Everything that must agree for the old weights to mean the same in the new networks.
SHARED_FIELDS = ("arch", "image_channels", "z_dim", "w_dim", "mapping_layers", "c_dim", "g_architecture",
                 "d_architecture", "conv_clamp", "mbstd_channels")


def check_compatible(old: GANConfig, new: GANConfig, source: str) -> None:
    for name in SHARED_FIELDS:
        if getattr(old, name) != getattr(new, name):
            raise FacesynthError(f"{source}: cannot start from this model: its {name} is {getattr(old, name)!r}, "
                                 f"the new config's is {getattr(new, name)!r}")
    if old.resolution > new.resolution:
        raise FacesynthError(f"{source}: its resolution {old.resolution} is above the new config's "
                             f"{new.resolution}; a model can only be grown")
    for res in old.block_resolutions:
        if old.channels_at(res) != new.channels_at(res):
            raise FacesynthError(f"{source}: {old.channels_at(res)} channels at {res}x{res}, the new config has "
                                 f"{new.channels_at(res)} (channel_overrides differ)")


def grown_tensors(tensors: dict[str, torch.Tensor], old: GANConfig, new: GANConfig) -> dict[str, torch.Tensor]:
    """Rename an old model's tensors to where they sit in the networks of ``new``."""
    shift = int(math.log2(new.resolution // old.resolution))
    if shift == 0:
        return dict(tensors)
    out = {}
    for name, t in tensors.items():
        if name.startswith("D.fromrgb."):
            if not (new.progressive and str(old.resolution) in _fromrgb_below(new)):
                continue  # the new discriminator never reads images at the old resolution
            name = name.replace("D.fromrgb.", f"D.fromrgb_below.{old.resolution}.", 1)
        else:
            m = re.match(r"D\.blocks\.(\d+)\.(.*)", name)
            if m:
                name = f"D.blocks.{int(m.group(1)) + shift}.{m.group(2)}"
        out[name] = t
    return out


def _fromrgb_below(cfg: GANConfig) -> set[str]:
    return {str(r) for r in cfg.block_resolutions[:-1] if r >= cfg.start_resolution}


def _layer(key: str) -> str:
    """'synthesis.blocks.4.conv0.conv.weight' -> 'synthesis.blocks.4', for a short report of what is new."""
    parts = key.split(".")
    for i, p in enumerate(parts):
        if p.isdigit():
            return ".".join(parts[:i + 1])
    return ".".join(parts[:-1]) or key


def load_matching(module: nn.Module, tensors: dict[str, torch.Tensor], prefix: str, source: str) -> list[str]:
    """Copy every tensor named ``prefix.<key>`` into ``module``; returns the keys left at their initial values."""
    own = module.state_dict()
    sub = {k[len(prefix) + 1:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}
    unknown = sorted(set(sub) - set(own))
    if unknown:
        raise FacesynthError(f"{source}: {prefix} weights {unknown[:3]} have no place in the new networks")
    for k, v in sub.items():
        if v.shape != own[k].shape:
            raise FacesynthError(f"{source}: {prefix}.{k} has shape {list(v.shape)}, the new networks expect "
                                 f"{list(own[k].shape)}")
    module.load_state_dict(sub, strict=False)
    return sorted(set(own) - set(sub))


def warm_start(models: dict[str, nn.Module], path: str, new: GANConfig, quiet: bool = False) -> dict:
    """Load G, D and G_ema (those present) of the checkpoint at ``path`` into ``models``."""
    model_file = ckpt.resolve_checkpoint(path)
    old, tensors, growth = ckpt.read_model(model_file)
    source = str(model_file)
    if growth and int(growth.get("resolution", old.resolution)) != old.resolution:
        raise FacesynthError(f"{source}: saved mid-growth at {growth['resolution']}x{growth['resolution']}; "
                             "start from a fully grown checkpoint")
    check_compatible(old, new, source)
    tensors = grown_tensors(tensors, old, new)
    fresh = {}
    have = {k.split(".", 1)[0] for k in tensors}
    fallback = {"G": "G_ema", "G_ema": "G"}  # an exported model holds G_ema alone
    for prefix, module in models.items():
        src = prefix if prefix in have else fallback.get(prefix)
        if src not in have:
            if prefix == "D":
                if new.freeze_d:
                    raise FacesynthError(f"{source}: holds no discriminator, so freeze_d={new.freeze_d} would keep "
                                         "random blocks fixed; start from a run's snapshot or a model exported "
                                         "with --with-d (both hold D), or drop --freeze-d")
                print(f"note: {source} holds no discriminator; D starts fresh", file=sys.stderr)
                continue
            raise FacesynthError(f"{source}: holds no {prefix} weights")
        fresh[prefix] = load_matching(module, {f"{prefix}.{k[len(src) + 1:]}": v for k, v in tensors.items()
                                               if k.startswith(src + ".")}, prefix, source)
    if not quiet:
        new_layers = sorted({f"{p}.{_layer(k)}" for p in ("G", "D") for k in fresh.get(p, [])})
        print(f"started from {source} ({old.resolution}x{old.resolution}); new layers: "
              f"{', '.join(new_layers) if new_layers else 'none'}", file=sys.stderr)
    return {"from": source, "from_resolution": old.resolution, "new": fresh}
