"""Read foreign GAN checkpoints without running anything from them.

NVIDIA's snapshot pickles, StyleGAN2's TensorFlow pickles and ``torch.save`` archives are all pickles, and
loading a pickle the usual way lets the file call any Python function it names.  This reader walks the
opcodes with the pure-Python unpickler, lets through a short list of names, each replaced by a local stand-in
that builds plain data, and checks every declared size against the bytes actually present before it
allocates anything.  What comes back is dicts, lists, tuples, numbers, strings, numpy arrays, torch tensors
and the inert records below (``PersistentObject``, ``TFNetwork``, ``InertObject``, ``EasyDict``).
"""

from __future__ import annotations

import _compat_pickle
import hashlib
import io
import math
import os
import pickle
import re
import stat
import struct
import zipfile
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from facesynth.errors import FacesynthError

__all__ = ["read_pickle", "PersistentObject", "TFNetwork", "InertObject", "EasyDict", "MAX_FILE_BYTES"]

MAX_FILE_BYTES = 8 * 1024**3
MAX_DEPTH = 1000
MAX_NDIM = 32
# Dict keys and set members get hashed; only small flat values are allowed, so that hashing stays cheap
# and cannot recurse deeply in C.
_MAX_KEY_NODES = 64
_MAX_KEY_DEPTH = 8
_MAX_INT_BITS = 4096
_MAX_INDEX = 2**62
# torch.save's legacy (pre-zip) stream: files from PyTorch < 1.6, and torch.storage._load_from_bytes blobs.
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001
_ZIP_MAGIC = b"PK\x03\x04"
_DATA_PKL = re.compile(r"[^/]+/data\.pkl")
_STORAGE_KEY = re.compile(r"[A-Za-z0-9_.-]{1,64}")
# numpy dtypes read from a file: plain numbers only (object, string, void and structured ones are refused).
_NUMBER_DTYPES = frozenset("f2 f4 f8 i1 i2 i4 i8 u1 u2 u4 u8 b1".split())


# ---------------------------------------------------------------------------------------------------------
# What callers get back


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


# ---------------------------------------------------------------------------------------------------------
# Markers the unpickler handles instead of real classes and functions


class _Global:
    """What find_class returns: a name plus the only things a file may do with it."""

    __slots__ = ("module", "name", "call", "new")

    def __init__(self, module: str, name: str, call: Callable | None = None, new: Callable | None = None):
        self.module, self.name, self.call, self.new = module, name, call, new

    @property
    def qualname(self) -> str:
        return f"{self.module}.{self.name}"


class _StorageType:
    """torch.FloatStorage and friends: only a dtype, named by persistent ids."""

    __slots__ = ("name", "dtype", "np_dtype", "itemsize")

    def __init__(self, name: str, dtype: torch.dtype, np_dtype: str):
        self.name, self.dtype, self.np_dtype = name, dtype, np.dtype(np_dtype)
        self.itemsize = self.np_dtype.itemsize


_STORAGE_TYPES = {st.name: st for st in (
    _StorageType("FloatStorage", torch.float32, "<f4"),
    _StorageType("DoubleStorage", torch.float64, "<f8"),
    _StorageType("HalfStorage", torch.float16, "<f2"),
    _StorageType("BFloat16Storage", torch.bfloat16, "<u2"),
    _StorageType("LongStorage", torch.int64, "<i8"),
    _StorageType("IntStorage", torch.int32, "<i4"),
    _StorageType("ShortStorage", torch.int16, "<i2"),
    _StorageType("CharStorage", torch.int8, "i1"),
    _StorageType("ByteStorage", torch.uint8, "u1"),
    _StorageType("BoolStorage", torch.bool, "u1"),
)}


class _Storage:
    """A storage's elements as a flat tensor."""

    __slots__ = ("flat", "stype")

    def __init__(self, flat: torch.Tensor, stype: _StorageType):
        self.flat, self.stype = flat, stype


class _Recipe:
    """A numpy object whose data arrives with BUILD; it is swapped for the real object then."""

    __slots__ = ("memo_keys", "spec", "done")

    def __init__(self, spec: str | None = None):
        self.memo_keys: list[int] = []
        self.spec = spec
        self.done = False


class _ArrayRecipe(_Recipe):
    __slots__ = ()


class _DtypeRecipe(_Recipe):
    __slots__ = ()


_RECIPES = (_ArrayRecipe, _DtypeRecipe)
_KINDS = {_ArrayRecipe: "a numpy array still without its data", _DtypeRecipe: "a numpy dtype still being built",
          _StorageType: "a torch storage type", _Storage: "a torch storage"}


# ---------------------------------------------------------------------------------------------------------
# Reading


class _Context:
    """One file's read: its name for messages, and how many bytes it may still turn into arrays."""

    def __init__(self, label: str, size: int):
        self.label = label
        self.size = size
        self.array_bytes_left = size
        self.storage_bytes_left = size
        self.items_left = size
        # Results for objects the file references many times through its memo, keyed by id (the object is
        # held alongside, so that its id stays its own): each is worked on once.
        self.blobs: dict[int, tuple[bytes, _Storage]] = {}
        self.digests: dict[int, tuple[str, str]] = {}
        self.encoded: dict[int, tuple[str, bytes]] = {}

    def spend(self, nbytes: int) -> None:
        # Memo references can rebuild one stored array many times: count every copy against the file size.
        self.array_bytes_left -= nbytes
        if self.array_bytes_left < 0:
            raise pickle.UnpicklingError("the arrays it builds hold more bytes than the whole file")

    def spend_items(self, count: int) -> None:
        # Stand-ins that copy a container (set(list), OrderedDict(pairs)) could be fed one memoized list
        # over and over: count the copied items against the file size too.
        self.items_left -= count
        if self.items_left < 0:
            raise pickle.UnpicklingError("it copies more items than the whole file has bytes")

    def spend_storage(self, nbytes: int) -> None:
        self.storage_bytes_left -= nbytes
        if self.storage_bytes_left < 0:
            raise pickle.UnpicklingError("its tensor storages hold more bytes than the whole file")


class _Buffer:
    """A file over bytes whose reads fail when the data ends early (pickle's own reads return short data)."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def read(self, n: int) -> bytes:
        end = self.pos + n
        if n < 0 or end > len(self.data):
            raise EOFError(f"the data ends early ({n} bytes wanted at offset {self.pos}, "
                           f"{len(self.data) - self.pos} left)")
        chunk = self.data[self.pos:end]
        self.pos = end
        return chunk

    def readline(self) -> bytes:
        end = self.data.find(b"\n", self.pos)
        if end < 0:
            raise EOFError(f"the data ends inside a text line at offset {self.pos}")
        return self.read(end + 1 - self.pos)


def _refusal(label: str, module: str, name: str) -> str:
    return (f"{label}: refused: the file asks for {_clean(module)}.{_clean(name)}, which facesynth never loads "
            "(it could run code); only weights are read")


def _clean(text: str) -> str:
    """Text from the file, safe to put on one line."""
    text = str(text)
    if not text.isprintable():
        text = text.encode("unicode_escape", "replace").decode("ascii")
    return text if len(text) <= 200 else text[:200] + "..."


class _Reader(pickle._Unpickler):
    """The pure-Python unpickler with every opcode that could call or set anything taken over.

    The C unpickler is not used: its memo is an array that one LONG_BINPUT index can make enormous.
    """

    dispatch: ClassVar[dict] = dict(pickle._Unpickler.dispatch)

    def __init__(self, buf: _Buffer, ctx: _Context, names: dict, persistent: Callable | None = None):
        super().__init__(buf, encoding="latin1")
        self.ctx = ctx
        self._names = names
        self._persistent = persistent
        self._good_keys: dict[int, tuple] = {}

    # -- names and outside data

    def find_class(self, module, name):
        if self.proto < 3 and self.fix_imports:
            # Python 2 names (__builtin__, copy_reg) as Python 3 spells them: a table lookup, no import.
            if (module, name) in _compat_pickle.NAME_MAPPING:
                module, name = _compat_pickle.NAME_MAPPING[(module, name)]
            elif module in _compat_pickle.IMPORT_MAPPING:
                module = _compat_pickle.IMPORT_MAPPING[module]
        found = self._names.get((module, name))
        if found is None:
            raise FacesynthError(_refusal(self.ctx.label, module, name))
        return found

    def persistent_load(self, pid):
        if self._persistent is None:
            raise pickle.UnpicklingError("it refers to outside data (a persistent id) that this format lacks")
        return self._persistent(pid)

    # -- calls

    def _call(self, func, args):
        if type(func) is not _Global or func.call is None:
            raise pickle.UnpicklingError(f"it asks to call {_describe(func)}, which is not callable here")
        if type(args) is not tuple:
            raise pickle.UnpicklingError("call arguments are not a tuple")
        return func.call(self, *args)

    def _new(self, cls, args, kwargs):
        if type(cls) is not _Global or cls.new is None:
            raise pickle.UnpicklingError(f"it asks to create {_describe(cls)}, which is not creatable here")
        if type(args) is not tuple or type(kwargs) is not dict:
            raise pickle.UnpicklingError("creation arguments are not a tuple and a dict")
        return cls.new(self, args, kwargs)

    def _load_reduce(self):
        args = self.stack.pop()
        self.stack[-1] = self._call(self.stack[-1], args)

    def _load_newobj(self):
        args = self.stack.pop()
        self.stack[-1] = self._new(self.stack[-1], args, {})

    def _load_newobj_ex(self):
        kwargs = self.stack.pop()
        args = self.stack.pop()
        self.stack[-1] = self._new(self.stack[-1], args, kwargs)

    def _instantiate(self, klass, args):
        # INST and OBJ (protocols 0 and 1).
        self.append(self._call(klass, tuple(args)) if args else self._new(klass, (), {}))

    def _load_build(self):
        state = self.stack.pop()
        inst = self.stack[-1]
        build = _BUILDERS.get(type(inst))
        if build is None:
            raise pickle.UnpicklingError(f"it asks to set the state of {_describe(inst)}, which is never done here")
        result = build(self, inst, state)
        if result is not inst:
            self.stack[-1] = result
            for key in inst.memo_keys:
                if self.memo.get(key) is inst:
                    self.memo[key] = result

    # -- containers (the stock versions call .append/.add/__setitem__ on whatever is on the stack)

    def _load_append(self):
        value = self.stack.pop()
        _need(self.stack[-1], list, "APPEND").append(value)

    def _load_appends(self):
        items = self.pop_mark()
        _need(self.stack[-1], list, "APPENDS").extend(items)

    def _load_setitem(self):
        value = self.stack.pop()
        key = self.stack.pop()
        target = _need(self.stack[-1], dict, "SETITEM")
        self._check_key(key)
        target[key] = value

    def _load_setitems(self):
        items = self.pop_mark()
        target = _need(self.stack[-1], dict, "SETITEMS")
        self._fill(target, items)

    def _load_dict(self):
        items = self.pop_mark()
        self.append(self._fill({}, items))

    def _load_additems(self):
        items = self.pop_mark()
        target = self.stack[-1]
        if type(target) is not set:
            raise pickle.UnpicklingError(f"ADDITEMS on {_describe(target)}")
        target.update(self._checked_members(items))

    def _load_frozenset(self):
        self.append(frozenset(self._checked_members(self.pop_mark())))

    def _fill(self, target: dict, items: list) -> dict:
        if len(items) % 2:
            raise pickle.UnpicklingError("odd number of items for a dict")
        for i in range(0, len(items), 2):
            self._check_key(items[i])
            target[items[i]] = items[i + 1]
        return target

    def _checked_members(self, items):
        for item in items:
            self._check_key(item)
        return items

    def _check_key(self, key) -> None:
        kind = type(key)
        if kind in (str, bytes, float, bool, type(None)):
            return
        if kind is int:
            if key.bit_length() > _MAX_INT_BITS:
                raise pickle.UnpicklingError("a dict key or set member is an enormous integer")
            return
        if kind is tuple:
            if id(key) not in self._good_keys:
                _check_tuple_key(key)
                self._good_keys[id(key)] = key  # held, so that the id stays this tuple's
            return
        raise pickle.UnpicklingError(f"a dict key or set member is {_describe(key)}")

    # -- buffers

    def _load_bytearray8(self):
        (size,) = struct.unpack("<Q", self.read(8))
        # read() checks the bytes are there before anything of that size is allocated.
        self.append(bytearray(self.read(size)))

    def _load_readonly_buffer(self):
        if type(self.stack[-1]) not in (bytes, bytearray):
            raise pickle.UnpicklingError(f"READONLY_BUFFER on {_describe(self.stack[-1])}")
        self.stack[-1] = bytes(self.stack[-1])

    def _load_extension(self):
        raise pickle.UnpicklingError("it uses the copyreg extension registry, which checkpoints never do")

    def _load_unknown(self):
        raise pickle.UnpicklingError("unknown pickle opcode")

    # -- memo (records where recipes are kept, so BUILD can swap them everywhere)

    def _remember(self, index: int) -> None:
        value = self.stack[-1]
        self.memo[index] = value
        if type(value) in _RECIPES:
            value.memo_keys.append(index)

    def _load_put(self):
        index = int(self.readline()[:-1])
        if index < 0:
            raise pickle.UnpicklingError("negative PUT index")
        self._remember(index)

    def _load_binput(self):
        self._remember(self.read(1)[0])

    def _load_long_binput(self):
        self._remember(struct.unpack("<I", self.read(4))[0])

    def _load_memoize(self):
        self._remember(len(self.memo))

    for _code, _handler in (
        (pickle.REDUCE, _load_reduce), (pickle.NEWOBJ, _load_newobj), (pickle.NEWOBJ_EX, _load_newobj_ex),
        (pickle.BUILD, _load_build), (pickle.APPEND, _load_append), (pickle.APPENDS, _load_appends),
        (pickle.SETITEM, _load_setitem), (pickle.SETITEMS, _load_setitems), (pickle.DICT, _load_dict),
        (pickle.ADDITEMS, _load_additems), (pickle.FROZENSET, _load_frozenset),
        (pickle.BYTEARRAY8, _load_bytearray8), (pickle.READONLY_BUFFER, _load_readonly_buffer),
        (pickle.EXT1, _load_extension), (pickle.EXT2, _load_extension), (pickle.EXT4, _load_extension),
        (pickle.PUT, _load_put), (pickle.BINPUT, _load_binput), (pickle.LONG_BINPUT, _load_long_binput),
        (pickle.MEMOIZE, _load_memoize),
    ):
        dispatch[_code[0]] = _handler
    for _code in range(256):
        dispatch.setdefault(_code, _load_unknown)
    del _code, _handler


def _need(obj, kind: type, opcode: str):
    if not isinstance(obj, kind):
        raise pickle.UnpicklingError(f"{opcode} on {_describe(obj)}")
    return obj


def _describe(obj) -> str:
    """A short name for an object from the file (never its repr, which could be huge)."""
    if type(obj) is _Global:
        return _clean(obj.qualname)
    if type(obj) in _KINDS:
        return _KINDS[type(obj)]
    name = type(obj).__name__
    return f"{'an' if name[:1].lower() in 'aeiou' else 'a'} {name}"


def _check_tuple_key(key: tuple) -> None:
    todo, nodes = [(key, 0)], 0
    while todo:
        item, depth = todo.pop()
        nodes += 1
        if nodes > _MAX_KEY_NODES or depth > _MAX_KEY_DEPTH:
            raise pickle.UnpicklingError("a dict key or set member is a large or deep tuple")
        kind = type(item)
        if kind is tuple:
            todo.extend((x, depth + 1) for x in item)
        elif kind is int:
            if item.bit_length() > _MAX_INT_BITS:
                raise pickle.UnpicklingError("a dict key or set member holds an enormous integer")
        elif kind not in (str, bytes, float, bool, type(None)):
            raise pickle.UnpicklingError(f"a dict key or set member holds {_describe(item)}")


# ---------------------------------------------------------------------------------------------------------
# Checks on numbers from the file


def _index(value, what: str) -> int:
    if type(value) is not int or not 0 <= value < _MAX_INDEX:
        raise pickle.UnpicklingError(f"{what} is not a non-negative integer")
    return value


def _shape(value, what: str = "shape") -> tuple[int, ...]:
    if type(value) not in (tuple, list):
        raise pickle.UnpicklingError(f"a {what} is not a tuple")
    if len(value) > MAX_NDIM:
        raise pickle.UnpicklingError(f"a {what} has {len(value)} dimensions (at most {MAX_NDIM})")
    return tuple(_index(n, f"a {what} entry") for n in value)


def _raw(value, what: str) -> bytes | bytearray:
    if type(value) is str:
        return value.encode("latin-1")  # Python 2 pickles, read with encoding='latin1'
    if type(value) not in (bytes, bytearray):
        raise pickle.UnpicklingError(f"{what} is not bytes")
    return value


# ---------------------------------------------------------------------------------------------------------
# Stand-ins for the allowed names.  Each takes the reader first, then the arguments from the file.


def _no_args(args, kwargs, what: str) -> None:
    if args or kwargs:
        raise pickle.UnpicklingError(f"{what} is created with arguments")


def _pairs(reader: _Reader, target: dict, source) -> dict:
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
    return _shape(dims, "torch.Size")


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
    if type(cls) is not _Global or type(base) is not _Global:
        raise pickle.UnpicklingError("copyreg._reconstructor is given something other than classes")
    if base.qualname == "builtins.object" and state is None:
        return reader._new(cls, (), {})
    if base.qualname == "builtins.dict" and cls.qualname in ("collections.OrderedDict", "dnnlib.util.EasyDict"):
        return _pairs(reader, reader._new(cls, (), {}), state)
    raise pickle.UnpicklingError(f"copyreg._reconstructor of {_describe(cls)} on {_describe(base)}")


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
        raise pickle.UnpicklingError(f"persistent object {_clean(class_name)} has no state dict")
    if version is not None and type(version) is not int:
        raise pickle.UnpicklingError(f"persistent object {_clean(class_name)} has a non-integer version")
    if type(source) is not str:
        raise pickle.UnpicklingError(f"persistent object {_clean(class_name)} has no module source text")
    # The source is hashed as text, never compiled or run; files share one source string among many objects.
    cached = reader.ctx.digests.get(id(source))
    if cached is None:
        digest = hashlib.sha256(source.encode("utf-8", "surrogatepass")).hexdigest()
        cached = reader.ctx.digests[id(source)] = (source, digest)
    return PersistentObject(class_name, version, state, cached[1])


# -- numpy


def _np_reconstruct(reader, subtype, shape, code):
    # ndarray.__reduce__: _reconstruct(ndarray, (0,), b'b'), then BUILD with the real shape, dtype and data.
    if type(subtype) is not _Global or subtype.qualname != "numpy.ndarray":
        raise pickle.UnpicklingError(f"numpy _reconstruct of {_describe(subtype)}")
    return _ArrayRecipe()


def _np_dtype(reader, spec, align=False, copy=False):
    if type(spec) is not str:
        raise pickle.UnpicklingError("a numpy dtype is named by something other than a string")
    if spec not in _NUMBER_DTYPES:
        raise pickle.UnpicklingError(f"numpy dtype {_clean(spec)!r} is not a plain number type; "
                                     "only numeric weights are read")
    return _DtypeRecipe(spec)


def _known_dtype(dtype) -> np.dtype:
    # Every np.dtype on the stack came from _build_dtype; check anyway, as an array's layout depends on it.
    if not isinstance(dtype, np.dtype) or dtype.kind not in "fiub" or dtype.str[1:] not in _NUMBER_DTYPES:
        raise pickle.UnpicklingError(f"an array's dtype is {_describe(dtype)}, not a numeric numpy dtype")
    return dtype


def _np_array(ctx: _Context, shape, dtype, fortran: bool, raw) -> np.ndarray:
    shape = _shape(shape)
    dtype = _known_dtype(dtype)
    raw = _raw(raw, "an array's data")
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


def _build_array(reader, recipe: _ArrayRecipe, state):
    if recipe.done:
        raise pickle.UnpicklingError("an array is given its data twice")
    if type(state) is not tuple or len(state) != 5:
        raise pickle.UnpicklingError("an array's state is not (version, shape, dtype, fortran, data)")
    version, shape, dtype, fortran, raw = state
    if type(version) is not int or type(fortran) not in (bool, int):
        raise pickle.UnpicklingError("an array's state has a bad version or order flag")
    recipe.done = True
    return _np_array(reader.ctx, shape, dtype, bool(fortran), raw)


def _build_dtype(reader, recipe: _DtypeRecipe, state):
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
    raw = _raw(raw, "a numpy scalar's data")
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
    if type(storage) is not _Storage:
        raise pickle.UnpicklingError(f"a tensor's storage is {_describe(storage)}")
    offset = _index(offset, "a tensor's storage offset")
    size, stride = _shape(size, "tensor size"), _shape(stride, "tensor stride")
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
        raise pickle.UnpicklingError(f"a parameter's data is {_describe(data)}")
    return data


def _flat_tensor(raw, stype: _StorageType) -> torch.Tensor:
    """A copy of little-endian bytes as a flat tensor of the storage's dtype."""
    flat = torch.from_numpy(np.frombuffer(raw, dtype=stype.np_dtype).astype(stype.np_dtype.newbyteorder("=")))
    if stype.dtype is torch.bool:
        return flat != 0
    if stype.dtype is torch.bfloat16:
        return flat.view(torch.bfloat16)
    return flat


def _load_from_bytes(reader, blob):
    # torch.storage._load_from_bytes: a storage saved as a legacy torch.save stream (stylegan2-ada pickles).
    if type(blob) not in (bytes, bytearray):
        raise pickle.UnpicklingError("an embedded storage is not bytes")
    ctx = reader.ctx
    cached = ctx.blobs.get(id(blob))
    if cached is not None:
        return cached[1]
    storage = _read_legacy(bytes(blob), ctx, _STORAGE_NAMES)
    if type(storage) is not _Storage:
        raise pickle.UnpicklingError("an embedded storage stream holds something other than one storage")
    ctx.blobs[id(blob)] = (blob, storage)  # holds the blob, so that its id stays unique
    return storage


def _read_legacy(data: bytes, ctx: _Context, names: dict):
    """A legacy (PyTorch < 1.6) torch.save stream: a whole file, or a blob given to _load_from_bytes.

    Layout: pickles of the magic number, the protocol version and a sys-info dict; the main pickle, whose
    persistent ids name storages; a pickle of the storage keys; then for each key in that order an int64
    element count and the raw little-endian elements.  The storages' data follows the pickle that uses them,
    so the main pickle is read twice: first over shape-only (meta) storages, to learn which storages it names
    and where it ends; then, once every count is checked against the bytes present, over the real data.
    """
    buf = _Buffer(data)

    def part(names=None, persistent=None, context=ctx):
        return _Reader(buf, context, names or {}, persistent).load()

    magic = part()
    if type(magic) is not int or magic != _LEGACY_MAGIC:
        raise pickle.UnpicklingError("the data is not a torch.save stream")
    version = part()
    if type(version) is not int or version != _LEGACY_PROTOCOL:
        raise pickle.UnpicklingError("a legacy torch.save stream has an unknown protocol version")
    info = part()
    if not isinstance(info, dict) or info.get("little_endian") is not True:
        raise pickle.UnpicklingError("a legacy torch.save stream is not little-endian")
    start, storages = buf.pos, _LegacyStorages()
    # The dry run gets its own budgets: the real read below spends them again.
    part(names, storages, _Context(ctx.label, ctx.size))
    keys = part()
    if (type(keys) is not list or not all(type(k) is str for k in keys) or len(set(keys)) != len(keys)
            or set(keys) != storages.loaded.keys()):
        raise pickle.UnpicklingError("a legacy torch.save stream lists other storages than its pickle names")
    spans = {}
    for key in keys:
        numel, stype = storages.loaded[key].flat.numel(), storages.loaded[key].stype
        (count,) = struct.unpack("<q", buf.read(8))
        nbytes, left = numel * stype.itemsize, len(data) - buf.pos
        if count != numel or nbytes > left:
            raise pickle.UnpicklingError(f"storage {_clean(key)} declares {numel} elements ({nbytes} bytes); "
                                         f"its data counts {count} elements and {left} bytes remain")
        spans[key] = (buf.pos, nbytes)
        buf.pos += nbytes
    if buf.pos != len(data):
        raise pickle.UnpicklingError(f"{len(data) - buf.pos} bytes follow a legacy torch.save stream's last storage")
    ctx.spend_storage(sum(n for _, n in spans.values()))
    raw = memoryview(data)
    for key, (at, nbytes) in spans.items():
        stype = storages.loaded[key].stype
        storages.loaded[key] = _Storage(_flat_tensor(raw[at:at + nbytes], stype), stype)
    buf.pos = start
    return part(names, storages)  # every id now finds its checked storage


class _LegacyStorages:
    """persistent_load for a legacy torch.save stream: ('storage', type, key, location, numel, view)."""

    def __init__(self):
        self.loaded: dict[str, _Storage] = {}

    def __call__(self, pid):
        if type(pid) is not tuple or len(pid) != 6 or type(pid[0]) is not str or pid[0] != "storage":
            raise pickle.UnpicklingError("a legacy torch.save stream has an unknown persistent id")
        _, stype, key, location, numel, view = pid
        if type(stype) is not _StorageType or type(key) is not str or type(location) is not str:
            raise pickle.UnpicklingError("a legacy torch.save stream has a malformed storage id")
        numel = _index(numel, "a storage's size")
        known = self.loaded.get(key)
        if known is None:
            # Shape only, no memory: the dry run allocates nothing before the data is checked.
            known = self.loaded[key] = _Storage(torch.empty(numel, dtype=stype.dtype, device="meta"), stype)
        elif known.stype is not stype or known.flat.numel() != numel:
            raise pickle.UnpicklingError(f"storage {_clean(key)} is declared with two different types or sizes")
        if view is None:
            return known
        # Very old files (PyTorch < 0.4) name slices of a storage: (view key, offset, size) in elements.
        if type(view) is not tuple or len(view) != 3 or type(view[0]) is not str:
            raise pickle.UnpicklingError("a legacy torch.save stream has a malformed storage view")
        offset, size = _index(view[1], "a storage view's offset"), _index(view[2], "a storage view's size")
        if offset + size > numel:
            raise pickle.UnpicklingError(f"a storage view ends at element {offset + size} of a storage of {numel}")
        return _Storage(known.flat[offset:offset + size], stype)


class _ZipStorages:
    """persistent_load for a torch.save zip archive: storages are the members <prefix>/data/<key>."""

    def __init__(self, archive: zipfile.ZipFile, prefix: str, ctx: _Context):
        self.archive, self.prefix, self.ctx = archive, prefix, ctx
        self.loaded: dict[str, _Storage] = {}

    def __call__(self, pid):
        if type(pid) is not tuple or len(pid) != 5 or type(pid[0]) is not str or pid[0] != "storage":
            raise pickle.UnpicklingError("the archive's pickle has an unknown persistent id")
        _, stype, key, location, numel = pid
        if type(stype) is not _StorageType or type(key) is not str or type(location) is not str:
            raise pickle.UnpicklingError("the archive's pickle has a malformed storage id")
        numel = _index(numel, "a storage's size")
        if not _STORAGE_KEY.fullmatch(key):
            raise pickle.UnpicklingError(f"storage key {_clean(key)!r} is not a plain name")
        known = self.loaded.get(key)
        if known is not None:
            if known.stype is not stype or known.flat.numel() != numel:
                raise pickle.UnpicklingError(f"storage {key} is declared with two different types or sizes")
            return known
        nbytes = numel * stype.itemsize
        self.ctx.spend_storage(nbytes)
        raw = _member(self.archive, f"{self.prefix}data/{key}", self.ctx, nbytes)
        storage = self.loaded[key] = _Storage(_flat_tensor(raw, stype), stype)
        return storage


def _member(archive: zipfile.ZipFile, name: str, ctx: _Context, expected: int | None = None) -> bytes:
    """One archive member, its declared size checked before it is read."""
    try:
        info = archive.getinfo(name)
    except KeyError:
        raise pickle.UnpicklingError(f"the archive has no member {_clean(name)}") from None
    if expected is not None and info.file_size != expected:
        raise pickle.UnpicklingError(f"archive member {_clean(name)} holds {info.file_size} bytes; "
                                     f"the pickle declares {expected}")
    if info.file_size > ctx.size:
        raise pickle.UnpicklingError(f"archive member {_clean(name)} declares more bytes than the whole file")
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED) or info.flag_bits & 0x1:
        raise pickle.UnpicklingError(f"archive member {_clean(name)} is encrypted or oddly compressed")
    with archive.open(info) as f:
        raw = f.read(info.file_size + 1)
    if len(raw) != info.file_size:
        raise pickle.UnpicklingError(f"archive member {_clean(name)} is not the size it declares")
    return raw


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


_BUILDERS: dict[type, Callable[[_Reader, Any, Any], Any]] = {
    _ArrayRecipe: _build_array,
    _DtypeRecipe: _build_dtype,
    OrderedDict: _build_ordered_dict,
    TFNetwork: _build_tf_network,
    InertObject: _build_inert,
}


def _main_names() -> dict:
    names: dict = {}

    def add(module, name, call=None, new=None):
        names[(module, name)] = _Global(module, name, call, new)

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


_STORAGE_NAMES = {("torch", name): stype for name, stype in _STORAGE_TYPES.items()}
_MAIN_NAMES = _main_names()


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


def _children(obj):
    if isinstance(obj, (list, tuple, set, frozenset)):
        return obj
    if isinstance(obj, dict):
        extra = list(vars(obj).values()) if type(obj) is OrderedDict else []
        return [*obj.keys(), *obj.values(), *extra]
    if isinstance(obj, (PersistentObject, TFNetwork, InertObject)):
        return (obj.state,)
    if type(obj) in _RECIPES:
        raise pickle.UnpicklingError("it leaves a numpy object without its data")
    if type(obj) is _Global:
        raise pickle.UnpicklingError(f"it holds a bare reference to {_clean(obj.qualname)}, not data")
    raise pickle.UnpicklingError(f"it holds {_describe(obj)} outside any tensor")


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
    ctx = _Context(label, len(data))
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


def _read_stream(data: bytes, ctx: _Context):
    buf = _Buffer(data)
    result = _Reader(buf, ctx, _MAIN_NAMES).load()
    if type(result) is int and result == _LEGACY_MAGIC:
        # torch.save before PyTorch 1.6 (rosinality's stylegan2 checkpoints): the magic number comes first.
        return _read_legacy(data, ctx, _MAIN_NAMES)
    return result


def _read_archive(data: bytes, ctx: _Context):
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return _read_open_archive(archive, ctx)


def _read_open_archive(archive: zipfile.ZipFile, ctx: _Context):
    names = archive.namelist()
    if len(set(names)) != len(names):
        raise pickle.UnpicklingError("the archive names a member twice")
    pickles = [n for n in names if _DATA_PKL.fullmatch(n)]
    if len(pickles) != 1:
        raise pickle.UnpicklingError(f"a torch archive holds one <name>/data.pkl; this one has {len(pickles)}")
    prefix = pickles[0][: -len("data.pkl")]
    if prefix + "byteorder" in names:
        order = _member(archive, prefix + "byteorder", ctx)
        if order.strip() != b"little":
            raise pickle.UnpicklingError("the archive's tensors are not little-endian")
    pkl = _member(archive, pickles[0], ctx)
    return _Reader(_Buffer(pkl), ctx, _MAIN_NAMES, _ZipStorages(archive, prefix, ctx)).load()


def _short(exc: Exception) -> str:
    text = str(exc).strip()
    first = text.splitlines()[0] if text else "no details"
    return _clean(first)
