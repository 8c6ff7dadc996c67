"""stylegan2-ada-pytorch snapshot pickles: a dict with G, D, G_ema (and training_set_kwargs, augment_pipe).

Each network is a ``torch_utils.persistence`` object; the restricted unpickler turns it into an inert
``PersistentObject`` whose state is the module's ``__dict__``.  Its ``_init_kwargs`` say how it was built and
its ``_parameters``/``_buffers``/``_modules`` hold the tensors; the source code embedded beside them is never
run.
"""

from __future__ import annotations

import torch

from ..errors import FacesynthError
from .official import OfficialNetwork, Refused
from .safe_pickle import PersistentObject

NETWORKS = ("G", "D", "G_ema")
# Classes of StyleGAN3's alias-free generator, which facesynth does not build.
_STYLEGAN3_CLASSES = {"SynthesisInput"}


def is_ada_snapshot(data) -> bool:
    return isinstance(data, dict) and any(isinstance(data.get(k), PersistentObject) for k in NETWORKS)


def _plain(value):
    """EasyDicts and OrderedDicts as plain dicts, all the way down (kwargs compare and print simply)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _tensors(obj: PersistentObject, prefix: str, out: dict, depth: int = 0) -> None:
    """The module's parameters and buffers under their state_dict names."""
    if depth > 64:
        raise FacesynthError("modules nest too deeply")
    state = obj.state
    for group in ("_parameters", "_buffers"):
        for name, value in (state.get(group) or {}).items():
            if value is None:
                continue
            if not torch.is_tensor(value):
                raise FacesynthError(f"{prefix}{name} is a {type(value).__name__}, not a tensor")
            out[f"{prefix}{name}"] = value
    for name, child in (state.get("_modules") or {}).items():
        if child is None:
            continue
        if not isinstance(child, PersistentObject):
            raise FacesynthError(f"submodule {prefix}{name} is a {type(child).__name__}, not a network layer")
        if child.class_name in _STYLEGAN3_CLASSES:
            raise Refused("this is a StyleGAN3 (alias-free) network, which facesynth does not build")
        _tensors(child, f"{prefix}{name}.", out, depth + 1)


def networks_of(data: dict) -> dict[str, OfficialNetwork]:
    """G, D and G_ema (those present) of an unpickled snapshot, in stylegan2-ada's layout."""
    out = {}
    for key in NETWORKS:
        obj = data.get(key)
        if obj is None:
            continue
        if not isinstance(obj, PersistentObject):
            raise FacesynthError(f"its {key} is a {type(obj).__name__}, not a stylegan2-ada network")
        expected = "Discriminator" if key == "D" else "Generator"
        if obj.class_name != expected:
            raise Refused(f"its {key} is a {obj.class_name}, not stylegan2-ada's {expected}")
        if obj.state.get("_init_args"):
            raise Refused(f"its {key} was built with positional arguments, which facesynth cannot read")
        kwargs = _plain(obj.state.get("_init_kwargs") or {})
        tensors: dict[str, torch.Tensor] = {}
        _tensors(obj, "", tensors)
        out[key] = OfficialNetwork(obj.class_name, kwargs, tensors)
    return out
