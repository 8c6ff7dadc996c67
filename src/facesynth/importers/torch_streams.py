"""The tensor storages of ``torch.save`` files: the legacy (PyTorch < 1.6) stream and the zip archive's members.

A legacy stream's storages follow the pickle that names them, so ``read_legacy`` reads that pickle twice, the
second time only once every declared count is checked against the bytes present; ``ZipStorages`` reads each
storage an archive's pickle names from its own member, whose size ``member`` checks before reading it.
"""

from __future__ import annotations

import pickle
import re
import struct
import zipfile

import numpy as np
import torch

from .pickle_reader import Buffer, Context, Reader, Storage, StorageType, as_index, clean

# torch.save's legacy (pre-zip) stream: files from PyTorch < 1.6, and torch.storage._load_from_bytes blobs.
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001
_STORAGE_KEY = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def _flat_tensor(raw, stype: StorageType) -> torch.Tensor:
    """A copy of little-endian bytes as a flat tensor of the storage's dtype."""
    flat = torch.from_numpy(np.frombuffer(raw, dtype=stype.np_dtype).astype(stype.np_dtype.newbyteorder("=")))
    if stype.dtype is torch.bool:
        return flat != 0
    if stype.dtype is torch.bfloat16:
        return flat.view(torch.bfloat16)
    return flat


def read_legacy(data: bytes, ctx: Context, names: dict):
    """A legacy (PyTorch < 1.6) torch.save stream: a whole file, or a blob given to _load_from_bytes.

    Layout: pickles of the magic number, the protocol version and a sys-info dict; the main pickle, whose
    persistent ids name storages; a pickle of the storage keys; then for each key in that order an int64
    element count and the raw little-endian elements.  The storages' data follows the pickle that uses them,
    so the main pickle is read twice: first over shape-only (meta) storages, to learn which storages it names
    and where it ends; then, once every count is checked against the bytes present, over the real data.
    """
    buf = Buffer(data)

    def part(names=None, persistent=None, context=ctx):
        return Reader(buf, context, names or {}, persistent).load()

    magic = part()
    if type(magic) is not int or magic != LEGACY_MAGIC:
        raise pickle.UnpicklingError("the data is not a torch.save stream")
    version = part()
    if type(version) is not int or version != _LEGACY_PROTOCOL:
        raise pickle.UnpicklingError("a legacy torch.save stream has an unknown protocol version")
    info = part()
    if not isinstance(info, dict) or info.get("little_endian") is not True:
        raise pickle.UnpicklingError("a legacy torch.save stream is not little-endian")
    start, storages = buf.pos, _LegacyStorages()
    # The dry run gets its own budgets: the real read below spends them again.
    part(names, storages, Context(ctx.label, ctx.size))
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
            raise pickle.UnpicklingError(f"storage {clean(key)} declares {numel} elements ({nbytes} bytes); "
                                         f"its data counts {count} elements and {left} bytes remain")
        spans[key] = (buf.pos, nbytes)
        buf.pos += nbytes
    if buf.pos != len(data):
        raise pickle.UnpicklingError(f"{len(data) - buf.pos} bytes follow a legacy torch.save stream's last storage")
    ctx.spend_storage(sum(n for _, n in spans.values()))
    raw = memoryview(data)
    for key, (at, nbytes) in spans.items():
        stype = storages.loaded[key].stype
        storages.loaded[key] = Storage(_flat_tensor(raw[at:at + nbytes], stype), stype)
    buf.pos = start
    return part(names, storages)  # every id now finds its checked storage


class _LegacyStorages:
    """persistent_load for a legacy torch.save stream: ('storage', type, key, location, numel, view)."""

    def __init__(self):
        self.loaded: dict[str, Storage] = {}

    def __call__(self, pid):
        if type(pid) is not tuple or len(pid) != 6 or type(pid[0]) is not str or pid[0] != "storage":
            raise pickle.UnpicklingError("a legacy torch.save stream has an unknown persistent id")
        _, stype, key, location, numel, view = pid
        if type(stype) is not StorageType or type(key) is not str or type(location) is not str:
            raise pickle.UnpicklingError("a legacy torch.save stream has a malformed storage id")
        numel = as_index(numel, "a storage's size")
        known = self.loaded.get(key)
        if known is None:
            # Shape only, no memory: the dry run allocates nothing before the data is checked.
            known = self.loaded[key] = Storage(torch.empty(numel, dtype=stype.dtype, device="meta"), stype)
        elif known.stype is not stype or known.flat.numel() != numel:
            raise pickle.UnpicklingError(f"storage {clean(key)} is declared with two different types or sizes")
        if view is None:
            return known
        # Very old files (PyTorch < 0.4) name slices of a storage: (view key, offset, size) in elements.
        if type(view) is not tuple or len(view) != 3 or type(view[0]) is not str:
            raise pickle.UnpicklingError("a legacy torch.save stream has a malformed storage view")
        offset, size = as_index(view[1], "a storage view's offset"), as_index(view[2], "a storage view's size")
        if offset + size > numel:
            raise pickle.UnpicklingError(f"a storage view ends at element {offset + size} of a storage of {numel}")
        return Storage(known.flat[offset:offset + size], stype)


class ZipStorages:
    """persistent_load for a torch.save zip archive: storages are the members <prefix>/data/<key>."""

    def __init__(self, archive: zipfile.ZipFile, prefix: str, ctx: Context):
        self.archive, self.prefix, self.ctx = archive, prefix, ctx
        self.loaded: dict[str, Storage] = {}

    def __call__(self, pid):
        if type(pid) is not tuple or len(pid) != 5 or type(pid[0]) is not str or pid[0] != "storage":
            raise pickle.UnpicklingError("the archive's pickle has an unknown persistent id")
        _, stype, key, location, numel = pid
        if type(stype) is not StorageType or type(key) is not str or type(location) is not str:
            raise pickle.UnpicklingError("the archive's pickle has a malformed storage id")
        numel = as_index(numel, "a storage's size")
        if not _STORAGE_KEY.fullmatch(key):
            raise pickle.UnpicklingError(f"storage key {clean(key)!r} is not a plain name")
        known = self.loaded.get(key)
        if known is not None:
            if known.stype is not stype or known.flat.numel() != numel:
                raise pickle.UnpicklingError(f"storage {key} is declared with two different types or sizes")
            return known
        nbytes = numel * stype.itemsize
        self.ctx.spend_storage(nbytes)
        raw = member(self.archive, f"{self.prefix}data/{key}", self.ctx, nbytes)
        storage = self.loaded[key] = Storage(_flat_tensor(raw, stype), stype)
        return storage


def member(archive: zipfile.ZipFile, name: str, ctx: Context, expected: int | None = None) -> bytes:
    """One archive member, its declared size checked before it is read."""
    try:
        info = archive.getinfo(name)
    except KeyError:
        raise pickle.UnpicklingError(f"the archive has no member {clean(name)}") from None
    if expected is not None and info.file_size != expected:
        raise pickle.UnpicklingError(f"archive member {clean(name)} holds {info.file_size} bytes; "
                                     f"the pickle declares {expected}")
    if info.file_size > ctx.size:
        raise pickle.UnpicklingError(f"archive member {clean(name)} declares more bytes than the whole file")
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED) or info.flag_bits & 0x1:
        raise pickle.UnpicklingError(f"archive member {clean(name)} is encrypted or oddly compressed")
    with archive.open(info) as f:
        raw = f.read(info.file_size + 1)
    if len(raw) != info.file_size:
        raise pickle.UnpicklingError(f"archive member {clean(name)} is not the size it declares")
    return raw
