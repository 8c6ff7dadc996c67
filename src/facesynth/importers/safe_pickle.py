"""Read foreign GAN checkpoints without running anything from them.

NVIDIA's snapshot pickles, StyleGAN2's TensorFlow pickles and ``torch.save`` archives are all pickles, and
loading a pickle the usual way lets the file call any Python function it names.  This reader walks the
opcodes with the pure-Python unpickler, lets through a short list of names, each replaced by a local stand-in
that builds plain data, and checks every declared size against the bytes actually present before it
allocates anything.  What comes back is dicts, lists, tuples, numbers, strings, numpy arrays, torch tensors
and the inert records (``PersistentObject``, ``TFNetwork``, ``InertObject``, ``EasyDict``).

This module reads the file, picks its format (a plain pickle, a torch.save zip archive or a legacy torch.save
stream) and checks what comes back; ``pickle_reader`` walks the opcodes, ``pickle_standins`` holds the allowed
names with their stand-ins and the records, and ``torch_streams`` reads the tensor storages of torch.save files.
"""

from __future__ import annotations

import io
import os
import pickle
import re
import stat
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

from facesynth.errors import FacesynthError

from .pickle_reader import MAX_NDIM  # noqa: F401 - still importable from here, where it was defined first
from .pickle_reader import RECIPES, Buffer, Context, Global, Reader, clean, describe
from .pickle_standins import MAIN_NAMES, EasyDict, InertObject, PersistentObject, TFNetwork
from .torch_streams import LEGACY_MAGIC, ZipStorages, member, read_legacy

__all__ = ["read_pickle", "PersistentObject", "TFNetwork", "InertObject", "EasyDict", "MAX_FILE_BYTES"]

MAX_FILE_BYTES = 8 * 1024**3
MAX_DEPTH = 1000
_ZIP_MAGIC = b"PK\x03\x04"
_DATA_PKL = re.compile(r"[^/]+/data\.pkl")


# ---------------------------------------------------------------------------------------------------------
# The result


_PLAIN = frozenset((type(None), bool, int, float, complex, str, bytes, bytearray))


def _check_result(root) -> None:
    """Refuse half-built objects left in the data, and nesting deeper than MAX_DEPTH (walked without recursion)."""
    seen: set[int] = set()
    tf_states: dict[int, dict] = {}
    todo = [(root, 0)]
    while todo:
        obj, depth = todo.pop()
        if type(obj) in _PLAIN or isinstance(obj, (np.ndarray, np.generic, np.dtype, torch.Tensor)):
            continue
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if depth >= MAX_DEPTH:
            raise pickle.UnpicklingError(f"its data nests deeper than {MAX_DEPTH} levels")
        if isinstance(obj, TFNetwork) and id(obj.state) not in tf_states:
            # Checked here, once the data is complete, and each state once however many share it.
            _check_tf_state(obj.state)
            tf_states[id(obj.state)] = obj.state
        todo.extend((child, depth + 1) for child in _children(obj))


def _check_tf_state(state) -> None:
    if not isinstance(state, dict):
        raise pickle.UnpicklingError("a TF Network's state is not a dict")
    if not isinstance(state.get("name"), (str, type(None))):
        raise pickle.UnpicklingError("a TF Network's name is not a string")
    for key in ("static_kwargs", "components"):
        if not isinstance(state.get(key, {}), dict):
            raise pickle.UnpicklingError(f"a TF Network's {key} is not a dict")
    if not all(isinstance(c, TFNetwork) for c in state.get("components", {}).values()):
        raise pickle.UnpicklingError("a TF Network's component is not a Network")
    variables = state.get("variables", [])
    if not isinstance(variables, (list, tuple)):
        raise pickle.UnpicklingError("a TF Network's variables are not a list")
    for item in variables:
        if not (isinstance(item, (list, tuple)) and len(item) == 2 and isinstance(item[0], str)
                and isinstance(item[1], (np.ndarray, np.generic))):
            raise pickle.UnpicklingError("a TF Network's variable is not a (name, array) pair")


def _children(obj):
    if isinstance(obj, (list, tuple, set, frozenset)):
        return obj
    if isinstance(obj, dict):
        extra = list(vars(obj).values()) if type(obj) is OrderedDict else []
        return [*obj.keys(), *obj.values(), *extra]
    if isinstance(obj, (PersistentObject, TFNetwork, InertObject)):
        return (obj.state,)
    if type(obj) in RECIPES:
        raise pickle.UnpicklingError("it leaves a numpy object without its data")
    if type(obj) is Global:
        raise pickle.UnpicklingError(f"it holds a bare reference to {clean(obj.qualname)}, not data")
    raise pickle.UnpicklingError(f"it holds {describe(obj)} outside any tensor")


# ---------------------------------------------------------------------------------------------------------
# Entry point


def read_pickle(path: str | Path):
    """The object graph in a checkpoint pickle or torch.save archive, read without running anything from it.

    Raises FacesynthError (one line naming the file) for anything it cannot or will not read.
    """
    try:
        label, path = str(path), Path(path)
    except TypeError:
        raise FacesynthError(f"{path!r} is not a file path") from None
    data = _read_file(path, label)
    ctx = Context(label, len(data))
    try:
        if data[:4] == _ZIP_MAGIC:
            result = _read_archive(data, ctx)
        else:
            result = _read_stream(data, ctx)
        _check_result(result)
    except FacesynthError as exc:
        raise FacesynthError(str(exc)) from None
    except Exception as exc:  # noqa: BLE001 - every failure becomes one line about the file
        raise FacesynthError(f"{label}: not a readable checkpoint ({type(exc).__name__}: {_short(exc)})") from None
    return result


def _read_file(path: Path, label: str) -> bytes:
    try:
        with open(path, "rb") as f:
            info = os.fstat(f.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise FacesynthError(f"{label}: not a regular file")
            if info.st_size > MAX_FILE_BYTES:
                raise FacesynthError(f"{label}: is {info.st_size / 2**30:.1f} GiB; checkpoints over "
                                     f"{MAX_FILE_BYTES / 2**30:.0f} GiB are not read")
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise FacesynthError(f"{label}: cannot be read ({exc.strerror or type(exc).__name__})") from None
    if len(data) > MAX_FILE_BYTES:
        raise FacesynthError(f"{label}: grew past {MAX_FILE_BYTES / 2**30:.0f} GiB while being read")
    return data


def _read_stream(data: bytes, ctx: Context):
    buf = Buffer(data)
    result = Reader(buf, ctx, MAIN_NAMES).load()
    if type(result) is int and result == LEGACY_MAGIC:
        # torch.save before PyTorch 1.6 (rosinality's stylegan2 checkpoints): the magic number comes first.
        return read_legacy(data, ctx, MAIN_NAMES)
    return result


def _read_archive(data: bytes, ctx: Context):
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return _read_open_archive(archive, ctx)


def _read_open_archive(archive: zipfile.ZipFile, ctx: Context):
    names = archive.namelist()
    if len(set(names)) != len(names):
        raise pickle.UnpicklingError("the archive names a member twice")
    pickles = [n for n in names if _DATA_PKL.fullmatch(n)]
    if len(pickles) != 1:
        raise pickle.UnpicklingError(f"a torch archive holds one <name>/data.pkl; this one has {len(pickles)}")
    prefix = pickles[0][: -len("data.pkl")]
    if prefix + "byteorder" in names:
        order = member(archive, prefix + "byteorder", ctx)
        if order.strip() != b"little":
            raise pickle.UnpicklingError("the archive's tensors are not little-endian")
    pkl = member(archive, pickles[0], ctx)
    return Reader(Buffer(pkl), ctx, MAIN_NAMES, ZipStorages(archive, prefix, ctx)).load()


def _short(exc: Exception) -> str:
    text = str(exc).strip()
    first = text.splitlines()[0] if text else "no details"
    return clean(first)
