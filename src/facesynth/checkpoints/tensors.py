"""Tensors in and out of networks, compared by name and shape with what the config builds, so a file
whose weights do not match its config is refused with the first difference named."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..config import GANConfig
from ..errors import FacesynthError


def module_tensors(prefix: str, module: nn.Module) -> dict[str, torch.Tensor]:
    """A network's weights and buffers as ``prefix.name`` CPU tensors, ready for a safetensors file."""
    return {f"{prefix}.{k}": v.detach().cpu().contiguous() for k, v in module.state_dict().items()}


def check_same_tensors(source, prefix: str, expected: dict[str, tuple], given: dict[str, tuple]) -> None:
    """The tensors of network ``prefix`` in a file (names -> shapes) must be exactly those its config builds."""
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    if missing or unexpected:
        raise FacesynthError(f"{source}: weights for {prefix} do not match its config "
                             f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    for k, shape in given.items():
        if tuple(shape) != tuple(expected[k]):
            raise FacesynthError(f"{source}: {prefix}.{k} has shape {list(shape)}, "
                                 f"its config expects {list(expected[k])}")


def load_module_tensors(module: nn.Module, tensors: dict[str, torch.Tensor], prefix: str, source: str) -> None:
    """Load the ``prefix.*`` tensors into ``module`` after checking they are exactly the ones it has."""
    sub = {k[len(prefix) + 1:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}
    check_same_tensors(source, prefix, {k: v.shape for k, v in module.state_dict().items()},
                       {k: v.shape for k, v in sub.items()})
    module.load_state_dict(sub)


def check_tensor_shapes(path: Path, shapes: dict[str, tuple[str, tuple[int, ...]]], builders: dict) -> None:
    """Each network the file holds (``builders``: prefix -> function building it from the config) must have
    exactly the tensors its config describes.  Compared on the header's shapes against networks built on
    the meta device, so a small file whose config describes a huge network is refused before anything of
    that size (the weights, or the networks themselves) is allocated."""
    for prefix, build in builders.items():
        sub = {k[len(prefix) + 1:]: shape for k, (_, shape) in shapes.items() if k.startswith(prefix + ".")}
        if not sub:
            continue
        try:
            with torch.device("meta"):
                own = {k: tuple(v.shape) for k, v in build().state_dict().items()}
        except FacesynthError:
            raise
        except Exception as e:  # a config validate() let through, yet no network can be built from it
            raise FacesynthError(f"{path}: its config does not build the {prefix} network "
                                 f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
        check_same_tensors(path, prefix, own, sub)


# Networks a config may describe that are built without first comparing them with the file on the meta
# device (whose first use costs seconds): at most this many bytes for G, G_ema and D together.
META_CHECK_BYTES = 768 * 2**20  # above every preset's bound


def gan_size_bound(cfg: GANConfig) -> int:
    """A generous upper bound on the bytes of G, G_ema and D (with buffers) that ``cfg`` describes."""
    w = max(cfg.z_dim, cfg.w_dim)
    params = (cfg.mapping_layers + 2) * w * w
    for r in cfg.block_resolutions:  # per resolution: G's 2-3 convolutions and their affines, D's 2-3
        c = max(cfg.channels_at(r), cfg.channels_at(max(4, r // 2)), cfg.image_channels)
        params += 3 * 9 * c * c + 4 * w * c + 4 * r * r
    return 3 * 4 * params
