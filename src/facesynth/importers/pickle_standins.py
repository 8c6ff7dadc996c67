"""The allow-list: every name a checkpoint may use, each with the local stand-in that builds plain data in its
place, and the records those stand-ins return for classes facesynth never loads.

Each stand-in takes the reader first, then the arguments from the file, and checks them before it builds
anything.  ``MAIN_NAMES`` is the table for a checkpoint's pickle; ``BUILDERS`` says which objects BUILD may give
state to, and how.
"""

from __future__ import annotations

import hashlib
import math
import pickle
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .pickle_reader import (ArrayRecipe, Context, DtypeRecipe, Global, Reader, Storage, StorageType, as_bytes,
                            as_index, as_shape, clean, describe)
from .torch_streams import read_legacy

# numpy dtypes read from a file: plain numbers only (object, string, void and structured ones are refused).
_NUMBER_DTYPES = frozenset("f2 f4 f8 i1 i2 i4 i8 u1 u2 u4 u8 b1".split())


# ---------------------------------------------------------------------------------------------------------
# What callers get back (importable from safe_pickle, which re-exports them)


class EasyDict(dict):
    """dnnlib.util.EasyDict, kept as a plain dict."""


@dataclass(eq=False)
class PersistentObject:
    """A torch_utils.persistence object (a network or layer): its class name and ``__dict__``.

    The module source embedded beside it is never compiled or run; only its SHA-256 is kept.
    """

    class_name: str
    version: int | None
    state: dict
    module_src_sha256: str

    def __repr__(self) -> str:
        return f"PersistentObject({self.class_name!r}, version={self.version!r}, {len(self.state)} fields)"


class TFNetwork:
    """A dnnlib.tflib.network.Network record from a StyleGAN2 TensorFlow pickle, as its state dict.

    ``build_module_src`` stays a string: it is never run.
    """

    def __init__(self, state: dict | None = None):
        self.state = {} if state is None else state

    def __setstate__(self, state) -> None:
        if not isinstance(state, dict):
            raise pickle.UnpicklingError("a TF Network's state is not a dict")
        self.state = state

    @property
    def name(self) -> str | None:
        name = self.state.get("name")
        return name if isinstance(name, str) else None

    @property
    def version(self) -> int | None:
        version = self.state.get("version")
        return version if type(version) is int else None

    @property
    def static_kwargs(self) -> dict:
        kwargs = self.state.get("static_kwargs")
        return dict(kwargs) if isinstance(kwargs, dict) else {}

    @property
    def components(self) -> dict[str, TFNetwork]:
        comps = self.state.get("components")
        return {k: v for k, v in comps.items() if isinstance(v, TFNetwork)} if isinstance(comps, dict) else {}

    @property
    def variables(self) -> list[tuple[str, np.ndarray]]:
        return [(name, np.asarray(value)) for name, value in self.state.get("variables") or ()]

    def __repr__(self) -> str:
        return f"TFNetwork({self.name!r}, version={self.version!r}, {len(self.variables)} variables)"


class InertObject:
    """An instance of a class facesynth never loads (e.g. argparse.Namespace): its name and state only."""

    def __init__(self, module: str, name: str, state: dict | None = None):
        self.module = module
        self.name = name
        self.state = {} if state is None else state

    def __setstate__(self, state) -> None:
        # BUILD's state is the instance __dict__, or a (__dict__, slots) pair.
        if isinstance(state, dict):
            self.state = state
            return
        if not (isinstance(state, tuple) and len(state) == 2):
            raise pickle.UnpicklingError(f"the state of a {self.module}.{self.name} is not a dict")
        merged = {}
        for part in state:
            if part is not None and not isinstance(part, dict):
                raise pickle.UnpicklingError(f"the state of a {self.module}.{self.name} is not a dict")
            merged.update(part or {})
        self.state = merged

    def __repr__(self) -> str:
        return f"InertObject({self.module}.{self.name}, {len(self.state)} fields)"


# ---------------------------------------------------------------------------------------------------------
# Stand-ins for the allowed names.  Each takes the reader first, then the arguments from the file.


def _no_args(args, kwargs, what: str) -> None:
    if args or kwargs:
        raise pickle.UnpicklingError(f"{what} is created with arguments")


def _pairs(reader: Reader, target: dict, source) -> dict:
    if isinstance(source, dict):
        source = list(source.items())
    if type(source) not in (list, tuple):
        raise pickle.UnpicklingError("a dict is built from something that is not a list of pairs")
    reader.ctx.spend_items(len(source))
    for pair in source:
        if type(pair) not in (list, tuple) or len(pair) != 2:
            raise pickle.UnpicklingError("a dict is built from something that is not a list of pairs")
        reader._check_key(pair[0])
        target[pair[0]] = pair[1]
    return target


def _ordered_dict(reader, *args):
    if len(args) > 1:
        raise pickle.UnpicklingError("OrderedDict takes at most one argument")
    return _pairs(reader, OrderedDict(), args[0]) if args else OrderedDict()


def _new_ordered_dict(reader, args, kwargs):
    _no_args(args, kwargs, "an OrderedDict")
    return OrderedDict()


def _easydict(reader, *args):
    if len(args) > 1:
        raise pickle.UnpicklingError("EasyDict takes at most one argument")
    return _pairs(reader, EasyDict(), args[0]) if args else EasyDict()


def _new_easydict(reader, args, kwargs):
    _no_args(args, kwargs, "an EasyDict")
    return EasyDict()


def _members(reader, args, kind):
    if len(args) > 1:
        raise pickle.UnpicklingError(f"{kind.__name__} takes at most one argument")
    items = args[0] if args else ()
    if type(items) not in (list, tuple):
        raise pickle.UnpicklingError(f"a {kind.__name__} is built from something that is not a list")
    reader.ctx.spend_items(len(items))
    return kind(reader._checked_members(items))


def _make_set(reader, *args):
    return _members(reader, args, set)


def _make_frozenset(reader, *args):
    return _members(reader, args, frozenset)


def _empty_bytes(reader, *args):
    if args:
        raise pickle.UnpicklingError("bytes() is called with arguments")
    return b""


def _codecs_encode(reader, text, encoding):
    # Protocols 0-2 store bytes as _codecs.encode(text, 'latin1'); no other encoding is ever needed.
    if type(text) is not str or type(encoding) is not str or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("_codecs.encode is only read for latin-1 text")
    cached = reader.ctx.encoded.get(id(text))
    if cached is None:
        cached = reader.ctx.encoded[id(text)] = (text, text.encode("latin-1"))
    return cached[1]


def _torch_size(reader, dims=()):
    reader.ctx.spend_items(len(dims) if type(dims) in (tuple, list) else 0)
    return as_shape(dims, "torch.Size")


def _new_tf_network(reader, args, kwargs):
    _no_args(args, kwargs, "a TF Network")
    return TFNetwork()


def _new_namespace(reader, args, kwargs):
    _no_args(args, kwargs, "an argparse.Namespace")
    return InertObject("argparse", "Namespace", {})


def _call_namespace(reader, *args):
    return _new_namespace(reader, args, {})


def _reconstructor(reader, cls, base, state):
    # copyreg._reconstructor: how protocols 0 and 1 create instances of ordinary classes.
    if type(cls) is not Global or type(base) is not Global:
        raise pickle.UnpicklingError("copyreg._reconstructor is given something other than classes")
    if base.qualname == "builtins.object" and state is None:
        return reader._new(cls, (), {})
    if base.qualname == "builtins.dict" and cls.qualname in ("collections.OrderedDict", "dnnlib.util.EasyDict"):
        return _pairs(reader, reader._new(cls, (), {}), state)
    raise pickle.UnpicklingError(f"copyreg._reconstructor of {describe(cls)} on {describe(base)}")


def _persistent_obj(reader, meta):
    if not isinstance(meta, dict):
        raise pickle.UnpicklingError("a persistent object's description is not a dict")
    kind, class_name, state = meta.get("type"), meta.get("class_name"), meta.get("state")
    version, source = meta.get("version"), meta.get("module_src")
    if type(kind) is not str or kind != "class":
        raise pickle.UnpicklingError("a persistent object is not of type 'class'")
    if type(class_name) is not str:
        raise pickle.UnpicklingError("a persistent object's class name is not a string")
    if not isinstance(state, dict):
        raise pickle.UnpicklingError(f"persistent object {clean(class_name)} has no state dict")
    if version is not None and type(version) is not int:
        raise pickle.UnpicklingError(f"persistent object {clean(class_name)} has a non-integer version")
    if type(source) is not str:
        raise pickle.UnpicklingError(f"persistent object {clean(class_name)} has no module source text")
    # The source is hashed as text, never compiled or run; files share one source string among many objects.
    cached = reader.ctx.digests.get(id(source))
    if cached is None:
        digest = hashlib.sha256(source.encode("utf-8", "surrogatepass")).hexdigest()
        cached = reader.ctx.digests[id(source)] = (source, digest)
    return PersistentObject(class_name, version, state, cached[1])


# -- numpy


def _np_reconstruct(reader, subtype, shape, code):
    # ndarray.__reduce__: _reconstruct(ndarray, (0,), b'b'), then BUILD with the real shape, dtype and data.
    if type(subtype) is not Global or subtype.qualname != "numpy.ndarray":
        raise pickle.UnpicklingError(f"numpy _reconstruct of {describe(subtype)}")
    return ArrayRecipe()


def _np_dtype(reader, spec, align=False, copy=False):
    if type(spec) is not str:
        raise pickle.UnpicklingError("a numpy dtype is named by something other than a string")
    if spec not in _NUMBER_DTYPES:
        raise pickle.UnpicklingError(f"numpy dtype {clean(spec)!r} is not a plain number type; "
                                     "only numeric weights are read")
    return DtypeRecipe(spec)


def _known_dtype(dtype) -> np.dtype:
    # Every np.dtype on the stack came from _build_dtype; check anyway, as an array's layout depends on it.
    if not isinstance(dtype, np.dtype) or dtype.kind not in "fiub" or dtype.str[1:] not in _NUMBER_DTYPES:
        raise pickle.UnpicklingError(f"an array's dtype is {describe(dtype)}, not a numeric numpy dtype")
    return dtype


def _np_array(ctx: Context, shape, dtype, fortran: bool, raw) -> np.ndarray:
    shape = as_shape(shape)
    dtype = _known_dtype(dtype)
    raw = as_bytes(raw, "an array's data")
    count = math.prod(shape)
    if count * dtype.itemsize != len(raw):
        raise pickle.UnpicklingError(f"an array of shape {shape} and dtype {dtype.str} needs "
                                     f"{count * dtype.itemsize} bytes; the file holds {len(raw)}")
    ctx.spend(len(raw))
    flat = _np_flat(raw, dtype)
    return flat.reshape(shape, order="F" if fortran else "C")


def _np_flat(raw, dtype: np.dtype) -> np.ndarray:
    """A copy of the bytes as a 1-D array in native byte order (bools as 0/1)."""
    if not raw:
        return np.empty(0, dtype=dtype.newbyteorder("="))
    if dtype.kind == "b":
        return np.frombuffer(raw, dtype=np.uint8) != 0
    return np.frombuffer(raw, dtype=dtype).astype(dtype.newbyteorder("="))


def _build_array(reader, recipe: ArrayRecipe, state):
    if recipe.done:
        raise pickle.UnpicklingError("an array is given its data twice")
    if type(state) is not tuple or len(state) != 5:
        raise pickle.UnpicklingError("an array's state is not (version, shape, dtype, fortran, data)")
    version, shape, dtype, fortran, raw = state
    if type(version) is not int or type(fortran) not in (bool, int):
        raise pickle.UnpicklingError("an array's state has a bad version or order flag")
    recipe.done = True
    return _np_array(reader.ctx, shape, dtype, bool(fortran), raw)


def _build_dtype(reader, recipe: DtypeRecipe, state):
    # dtype.__reduce__'s state: (version, byte order, subarray, names, fields, elsize, alignment, flags...).
    if recipe.done:
        raise pickle.UnpicklingError("a dtype is given its state twice")
    if type(state) is not tuple or len(state) < 2:
        raise pickle.UnpicklingError("a numpy dtype's state is not a tuple")
    if any(part is not None for part in state[2:5]):
        raise pickle.UnpicklingError("a numpy dtype is structured or a subarray; only numbers are read")
    order = state[1]
    if type(order) is not str or order not in ("<", ">", "|", "="):
        raise pickle.UnpicklingError("a numpy dtype has an unknown byte order")
    recipe.done = True
    return np.dtype(recipe.spec).newbyteorder(order)


def _np_scalar(reader, dtype, raw):
    dtype = _known_dtype(dtype)
    raw = as_bytes(raw, "a numpy scalar's data")
    if len(raw) != dtype.itemsize:
        raise pickle.UnpicklingError(f"a numpy {dtype.str} scalar holds {len(raw)} bytes")
    reader.ctx.spend(len(raw))
    return _np_flat(raw, dtype)[0]


def _np_frombuffer(reader, buf, dtype, shape, order):
    # ndarray.__reduce_ex__ at protocol 5: _frombuffer(bytes, dtype, shape, order).
    if type(order) is not str or order not in ("C", "F"):
        raise pickle.UnpicklingError("an array's order is neither 'C' nor 'F'")
    return _np_array(reader.ctx, shape, dtype, order == "F", buf)


# -- torch


def _rebuild_tensor(reader, storage, offset, size, stride):
    if type(storage) is not Storage:
        raise pickle.UnpicklingError(f"a tensor's storage is {describe(storage)}")
    offset = as_index(offset, "a tensor's storage offset")
    size, stride = as_shape(size, "tensor size"), as_shape(stride, "tensor stride")
    if len(size) != len(stride):
        raise pickle.UnpicklingError("a tensor's size and stride differ in length")
    numel = storage.flat.numel()
    count = math.prod(size)
    if count:
        last = offset + sum((n - 1) * s for n, s in zip(size, stride))
        if last >= numel:
            raise pickle.UnpicklingError(f"a tensor reaches element {last} of a storage of {numel}")
    elif offset > numel:
        raise pickle.UnpicklingError(f"an empty tensor starts at {offset}, past a storage of {numel}")
    reader.ctx.spend(count * storage.stype.itemsize)
    # as_strided counts from the start of the memory: a legacy storage view is a slice that starts later.
    return torch.as_strided(storage.flat, size, stride, storage.flat.storage_offset() + offset).clone()


def _rebuild_tensor_v2(reader, storage, offset, size, stride, requires_grad, hooks, metadata=None):
    # requires_grad, backward hooks and metadata are not needed for weights.
    return _rebuild_tensor(reader, storage, offset, size, stride)


def _rebuild_parameter(reader, data, requires_grad, hooks, state=None):
    if not isinstance(data, torch.Tensor):
        raise pickle.UnpicklingError(f"a parameter's data is {describe(data)}")
    return data


def _load_from_bytes(reader, blob):
    # torch.storage._load_from_bytes: a storage saved as a legacy torch.save stream (stylegan2-ada pickles).
    if type(blob) not in (bytes, bytearray):
        raise pickle.UnpicklingError("an embedded storage is not bytes")
    ctx = reader.ctx
    cached = ctx.blobs.get(id(blob))
    if cached is not None:
        return cached[1]
    storage = read_legacy(bytes(blob), ctx, _STORAGE_NAMES)
    if type(storage) is not Storage:
        raise pickle.UnpicklingError("an embedded storage stream holds something other than one storage")
    ctx.blobs[id(blob)] = (blob, storage)  # holds the blob, so that its id stays unique
    return storage


# ---------------------------------------------------------------------------------------------------------
# Tables


def _build_ordered_dict(reader, obj: OrderedDict, state):
    # torch state_dicts carry their module versions as the OrderedDict's _metadata attribute.
    if state is None:
        return obj
    if not isinstance(state, dict) or set(state) - {"_metadata"}:
        raise pickle.UnpicklingError("an OrderedDict is given attributes other than _metadata")
    if "_metadata" in state:
        obj._metadata = state["_metadata"]
    return obj


def _build_tf_network(reader, obj: TFNetwork, state):
    obj.__setstate__(state)
    return obj


def _build_inert(reader, obj: InertObject, state):
    if isinstance(state, tuple):
        reader.ctx.spend_items(sum(len(part) for part in state if isinstance(part, dict)))
    obj.__setstate__(state)
    return obj


BUILDERS: dict[type, Callable[[Reader, Any, Any], Any]] = {
    ArrayRecipe: _build_array,
    DtypeRecipe: _build_dtype,
    OrderedDict: _build_ordered_dict,
    TFNetwork: _build_tf_network,
    InertObject: _build_inert,
}


def _main_names() -> dict:
    names: dict = {}

    def add(module, name, call=None, new=None):
        names[(module, name)] = Global(module, name, call, new)

    add("collections", "OrderedDict", _ordered_dict, _new_ordered_dict)
    add("builtins", "set", _make_set)
    add("builtins", "frozenset", _make_frozenset)
    add("builtins", "bytes", _empty_bytes)
    add("builtins", "object")  # only as copyreg._reconstructor's base
    add("builtins", "dict")  # likewise
    add("copyreg", "_reconstructor", _reconstructor)
    add("_codecs", "encode", _codecs_encode)
    add("dnnlib.util", "EasyDict", _easydict, _new_easydict)
    add("torch_utils.persistence", "_reconstruct_persistent_obj", _persistent_obj)
    add("dnnlib.tflib.network", "Network", None, _new_tf_network)
    add("argparse", "Namespace", _call_namespace, _new_namespace)
    for core in ("numpy.core", "numpy._core"):
        add(f"{core}.multiarray", "_reconstruct", _np_reconstruct)
        add(f"{core}.multiarray", "scalar", _np_scalar)
        add(f"{core}.numeric", "_frombuffer", _np_frombuffer)
    add("numpy", "ndarray")  # only as _reconstruct's subtype
    add("numpy", "dtype", _np_dtype)
    add("torch", "Size", _torch_size)
    add("torch._utils", "_rebuild_tensor", _rebuild_tensor)
    add("torch._utils", "_rebuild_tensor_v2", _rebuild_tensor_v2)
    add("torch._utils", "_rebuild_parameter", _rebuild_parameter)
    add("torch._utils", "_rebuild_parameter_with_state", _rebuild_parameter)
    add("torch.storage", "_load_from_bytes", _load_from_bytes)
    names.update(_STORAGE_NAMES)
    return names


_STORAGE_TYPES = {st.name: st for st in (
    StorageType("FloatStorage", torch.float32, "<f4"),
    StorageType("DoubleStorage", torch.float64, "<f8"),
    StorageType("HalfStorage", torch.float16, "<f2"),
    StorageType("BFloat16Storage", torch.bfloat16, "<u2"),
    StorageType("LongStorage", torch.int64, "<i8"),
    StorageType("IntStorage", torch.int32, "<i4"),
    StorageType("ShortStorage", torch.int16, "<i2"),
    StorageType("CharStorage", torch.int8, "i1"),
    StorageType("ByteStorage", torch.uint8, "u1"),
    StorageType("BoolStorage", torch.bool, "u1"),
)}
_STORAGE_NAMES = {("torch", name): stype for name, stype in _STORAGE_TYPES.items()}
MAIN_NAMES = _main_names()
