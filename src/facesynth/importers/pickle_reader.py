"""The opcode-level reader behind ``safe_pickle``: it walks a pickle and takes over every opcode that could call
or set anything.

``Reader`` runs the pure-Python unpickler over a ``Buffer`` whose reads fail when the data ends early; names the
file asks for resolve only through the table it is given (see ``pickle_standins``), and what they stand for is
kept on the stack as the markers below until a stand-in or BUILD turns it into plain data.  ``Context`` holds a
file's budgets, and the number checks here vet every size and index taken from the file before it is used.
"""

from __future__ import annotations

import _compat_pickle
import pickle
import struct
from collections.abc import Callable
from typing import ClassVar

import numpy as np
import torch

from facesynth.errors import FacesynthError

MAX_NDIM = 32
# Dict keys and set members get hashed; only small flat values are allowed, so that hashing stays cheap
# and cannot recurse deeply in C.
_MAX_KEY_NODES = 64
_MAX_KEY_DEPTH = 8
_MAX_INT_BITS = 4096
_MAX_INDEX = 2**62


# ---------------------------------------------------------------------------------------------------------
# Markers the unpickler handles instead of real classes and functions


class Global:
    """What find_class returns: a name plus the only things a file may do with it."""

    __slots__ = ("module", "name", "call", "new")

    def __init__(self, module: str, name: str, call: Callable | None = None, new: Callable | None = None):
        self.module, self.name, self.call, self.new = module, name, call, new

    @property
    def qualname(self) -> str:
        return f"{self.module}.{self.name}"


class StorageType:
    """torch.FloatStorage and friends: only a dtype, named by persistent ids."""

    __slots__ = ("name", "dtype", "np_dtype", "itemsize")

    def __init__(self, name: str, dtype: torch.dtype, np_dtype: str):
        self.name, self.dtype, self.np_dtype = name, dtype, np.dtype(np_dtype)
        self.itemsize = self.np_dtype.itemsize


class Storage:
    """A storage's elements as a flat tensor."""

    __slots__ = ("flat", "stype")

    def __init__(self, flat: torch.Tensor, stype: StorageType):
        self.flat, self.stype = flat, stype


class _Recipe:
    """A numpy object whose data arrives with BUILD; it is swapped for the real object then."""

    __slots__ = ("memo_keys", "spec", "done")

    def __init__(self, spec: str | None = None):
        self.memo_keys: list[int] = []
        self.spec = spec
        self.done = False


class ArrayRecipe(_Recipe):
    __slots__ = ()


class DtypeRecipe(_Recipe):
    __slots__ = ()


RECIPES = (ArrayRecipe, DtypeRecipe)
_KINDS = {ArrayRecipe: "a numpy array still without its data", DtypeRecipe: "a numpy dtype still being built",
          StorageType: "a torch storage type", Storage: "a torch storage"}


# ---------------------------------------------------------------------------------------------------------
# Reading


class Context:
    """One file's read: its name for messages, and how many bytes it may still turn into arrays."""

    def __init__(self, label: str, size: int):
        self.label = label
        self.size = size
        self.array_bytes_left = size
        self.storage_bytes_left = size
        self.items_left = size
        # Results for objects the file references many times through its memo, keyed by id (the object is
        # held alongside, so that its id stays its own): each is worked on once.
        self.blobs: dict[int, tuple[bytes, Storage]] = {}
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


class Buffer:
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
    return (f"{label}: refused: the file asks for {clean(module)}.{clean(name)}, which facesynth never loads "
            "(it could run code); only weights are read")


def clean(text: str) -> str:
    """Text from the file, safe to put on one line."""
    text = str(text)
    if not text.isprintable():
        text = text.encode("unicode_escape", "replace").decode("ascii")
    return text if len(text) <= 200 else text[:200] + "..."


class Reader(pickle._Unpickler):
    """The pure-Python unpickler with every opcode that could call or set anything taken over.

    The C unpickler is not used: its memo is an array that one LONG_BINPUT index can make enormous.
    """

    dispatch: ClassVar[dict] = dict(pickle._Unpickler.dispatch)

    def __init__(self, buf: Buffer, ctx: Context, names: dict, persistent: Callable | None = None):
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
        if type(func) is not Global or func.call is None:
            raise pickle.UnpicklingError(f"it asks to call {describe(func)}, which is not callable here")
        if type(args) is not tuple:
            raise pickle.UnpicklingError("call arguments are not a tuple")
        return func.call(self, *args)

    def _new(self, cls, args, kwargs):
        if type(cls) is not Global or cls.new is None:
            raise pickle.UnpicklingError(f"it asks to create {describe(cls)}, which is not creatable here")
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
        # The BUILD table sits with the stand-ins, which import this module: it is looked up here, when a
        # file first uses BUILD, so that the import at load time runs one way only.
        from .pickle_standins import BUILDERS

        state = self.stack.pop()
        inst = self.stack[-1]
        build = BUILDERS.get(type(inst))
        if build is None:
            raise pickle.UnpicklingError(f"it asks to set the state of {describe(inst)}, which is never done here")
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
            raise pickle.UnpicklingError(f"ADDITEMS on {describe(target)}")
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
        raise pickle.UnpicklingError(f"a dict key or set member is {describe(key)}")

    # -- buffers

    def _load_bytearray8(self):
        (size,) = struct.unpack("<Q", self.read(8))
        # read() checks the bytes are there before anything of that size is allocated.
        self.append(bytearray(self.read(size)))

    def _load_readonly_buffer(self):
        if type(self.stack[-1]) not in (bytes, bytearray):
            raise pickle.UnpicklingError(f"READONLY_BUFFER on {describe(self.stack[-1])}")
        self.stack[-1] = bytes(self.stack[-1])

    def _load_extension(self):
        raise pickle.UnpicklingError("it uses the copyreg extension registry, which checkpoints never do")

    def _load_unknown(self):
        raise pickle.UnpicklingError("unknown pickle opcode")

    # -- memo (records where recipes are kept, so BUILD can swap them everywhere)

    def _remember(self, index: int) -> None:
        value = self.stack[-1]
        self.memo[index] = value
        if type(value) in RECIPES:
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
        raise pickle.UnpicklingError(f"{opcode} on {describe(obj)}")
    return obj


def describe(obj) -> str:
    """A short name for an object from the file (never its repr, which could be huge)."""
    if type(obj) is Global:
        return clean(obj.qualname)
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
            raise pickle.UnpicklingError(f"a dict key or set member holds {describe(item)}")


# ---------------------------------------------------------------------------------------------------------
# Checks on numbers from the file


def as_index(value, what: str) -> int:
    if type(value) is not int or not 0 <= value < _MAX_INDEX:
        raise pickle.UnpicklingError(f"{what} is not a non-negative integer")
    return value


def as_shape(value, what: str = "shape") -> tuple[int, ...]:
    if type(value) not in (tuple, list):
        raise pickle.UnpicklingError(f"a {what} is not a tuple")
    if len(value) > MAX_NDIM:
        raise pickle.UnpicklingError(f"a {what} has {len(value)} dimensions (at most {MAX_NDIM})")
    return tuple(as_index(n, f"a {what} entry") for n in value)


def as_bytes(value, what: str) -> bytes | bytearray:
    if type(value) is str:
        return value.encode("latin-1")  # Python 2 pickles, read with encoding='latin1'
    if type(value) not in (bytes, bytearray):
        raise pickle.UnpicklingError(f"{what} is not bytes")
    return value
