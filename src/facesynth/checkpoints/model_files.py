"""GAN model files: read with their config and growth state, loaded into a generator, or exported as a
generator alone."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from torch import nn

from ..config import GANConfig
from ..errors import FacesynthError
from ..util.atomic import atomic_path
from .locate import resolve_checkpoint
from .metadata import KIND, config_from_metadata, growth_from_metadata, model_metadata
from .safetensors_io import read_safetensors, safetensors_header, save_file
from .tensors import META_CHECK_BYTES, check_tensor_shapes, gan_size_bound, load_module_tensors


def read_model(path: str | Path) -> tuple[GANConfig, dict[str, torch.Tensor], dict]:
    """Config, tensors and growth state ({} for a model trained at full resolution) of a model file."""
    from ..nets import build_discriminator, build_generator

    path = resolve_checkpoint(path)
    meta, shapes = safetensors_header(path)
    if meta.get("kind") != KIND:
        raise FacesynthError(f"{path}: not a facesynth GAN checkpoint (kind={meta.get('kind')!r})")
    cfg = config_from_metadata(meta, GANConfig, path)
    growth = growth_from_metadata(meta, cfg, path)
    if gan_size_bound(cfg) > META_CHECK_BYTES:  # small networks are simply built and compared when loaded
        g = lambda: build_generator(cfg)  # noqa: E731
        check_tensor_shapes(path, shapes, {"G": g, "G_ema": g, "D": lambda: build_discriminator(cfg)})
    return cfg, read_safetensors(path), growth


def read_model_file(path: str | Path) -> tuple[GANConfig, dict[str, torch.Tensor]]:
    """Config and tensors of a model.safetensors, refusing files of any other kind."""
    cfg, tensors, _ = read_model(path)
    return cfg, tensors


def apply_growth(module: nn.Module, growth: dict, source: str) -> None:
    """Put a network at the resolution and fade-in it was saved at."""
    if not growth:
        return
    try:
        module.set_growth(int(growth["resolution"]), float(growth.get("alpha", 1.0)))
    except (KeyError, TypeError, ValueError) as e:
        raise FacesynthError(f"{source}: bad growth state {growth!r} ({e})") from None


def load_generator(path: str | Path, device: str | torch.device = "cpu", which: str = "G_ema"):
    """Rebuild the (EMA) generator of a checkpoint, ready for inference, at the resolution it was saved at."""
    from ..nets import build_generator

    cfg, tensors, growth = read_model(path)
    g = build_generator(cfg)
    if not any(k.startswith(which + ".") for k in tensors):
        which = "G"
    load_module_tensors(g, tensors, which, str(path))
    apply_growth(g, growth, str(path))
    return g.eval().requires_grad_(False).to(device)


def export_generator(path: str | Path, out: str | Path, half: bool = False, framing: str | None = None,
                     with_d: bool = False) -> Path:
    """Write a checkpoint's G_ema alone (optionally as float16) as a small model file for inference;
    ``framing`` records how its training faces were cropped when the run did not say (align and project read it).
    ``with_d`` keeps the discriminator too, so that training can go on from the file (``train --init-from``)
    against the D that G learned with: a fresh D does not catch up with a trained G.

    Export copies tensors without loading them into a network, the step where every other reader compares
    them with the config; so it makes read_model's header comparison (check_tensor_shapes) for every file,
    before any tensor is read: a header declaring a 4 GiB tensor is refused, not copied."""
    from ..nets import build_discriminator, build_generator

    path = resolve_checkpoint(path)
    meta, shapes = safetensors_header(path)
    if meta.get("kind") == KIND:  # any other kind: read_model refuses it next, in its own words
        cfg = config_from_metadata(meta, GANConfig, path)
        g = lambda: build_generator(cfg)  # noqa: E731
        check_tensor_shapes(path, shapes, {"G": g, "G_ema": g, "D": lambda: build_discriminator(cfg)})
    cfg, tensors, growth = read_model(path)
    if framing is not None:
        cfg = dataclasses.replace(cfg, framing=framing).validate(str(path))
    which = "G_ema" if any(k.startswith("G_ema.") for k in tensors) else "G"
    g = {f"G_ema.{k[len(which) + 1:]}": v for k, v in tensors.items() if k.startswith(which + ".")}
    if with_d:
        d = {k: v for k, v in tensors.items() if k.startswith("D.")}
        if not d:
            raise FacesynthError(f"{path}: holds no discriminator to keep (an exported model holds G alone)")
        g.update(d)
    if half:
        g = {k: v.half() if v.is_floating_point() else v for k, v in g.items()}
    out = Path(out)
    with atomic_path(out) as tmp:
        save_file({k: v.contiguous() for k, v in g.items()}, str(tmp), metadata=model_metadata(cfg, growth))
    return out
