"""The restricted unpickler: real formats read back, hostile files refused, nothing from a file ever runs."""

from __future__ import annotations

import argparse
import io
import json
import os
import pickle
import pickletools
import random
import resource
import struct
import sys
import time
import types
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

from facesynth.errors import FacesynthError
from facesynth.importers.safe_pickle import InertObject, PersistentObject, TFNetwork, read_pickle
from fuzz_targets import checkpoint_seeds, pickle_opcodes

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "official"
MARKER = "FACESYNTH_PWNED"
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _refusal(path: Path, qualname: str) -> str:
    return (f"{path}: refused: the file asks for {qualname}, which facesynth never loads (it could run code); "
            "only weights are read")


def _unreadable(path: Path, *words: str):
    """Read a file that must fail with the one-line 'not a readable checkpoint' message."""
    with pytest.raises(FacesynthError) as info:
        read_pickle(path)
    message = str(info.value)
    assert message.startswith(f"{path}: not a readable checkpoint (") and "\n" not in message, message
    for word in words:
        assert word in message, message
    return message


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """Run in an empty directory, and check afterwards that no payload wrote its marker there."""
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    assert not (tmp_path / MARKER).exists(), "a payload ran"


# ---------------------------------------------------------------------------------------------------------
# Builders for files in the formats the reader takes


class _Call:
    """Pickles as a call of ``func`` with ``args`` (the way hostile files and torch tensors are written)."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


class _StorageRef:
    """Pickles as a torch persistent id for storage ``key``."""

    def __init__(self, key: str, numel: int, storage_type=torch.FloatStorage, legacy: bool = False):
        self.key, self.numel, self.storage_type, self.legacy = key, numel, storage_type, legacy

    def pid(self):
        base = ("storage", self.storage_type, self.key, "cpu", self.numel)
        return base + (None,) if self.legacy else base


def _dumps_with_ids(obj, protocol: int = 2) -> bytes:
    buf = io.BytesIO()
    pickler = pickle.Pickler(buf, protocol=protocol)
    pickler.persistent_id = lambda o: o.pid() if isinstance(o, _StorageRef) else None
    pickler.dump(obj)
    return buf.getvalue()


def _tensor_call(storage, offset, size, stride) -> _Call:
    return _Call(torch._utils._rebuild_tensor_v2, storage, offset, size, stride, False, OrderedDict())


def _torch_zip(obj, members: dict[str, bytes], byteorder: bytes = b"little") -> bytes:
    """A torch.save-style archive: archive/data.pkl (with persistent ids) and archive/data/<key>."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("archive/data.pkl", _dumps_with_ids(obj))
        zf.writestr("archive/byteorder", byteorder)
        for key, raw in members.items():
            zf.writestr(f"archive/data/{key}", raw)
        zf.writestr("archive/version", b"3\n")
    return buf.getvalue()


def _rezip(data: bytes, change) -> bytes:
    """A copy of an archive with each member's bytes passed through change(name, raw)."""
    src = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as zf:
        for name in src.namelist():
            zf.writestr(name, change(name, src.read(name)))
    return out.getvalue()


def _legacy_stream(main, storages: dict, *, keys=None, counts: dict | None = None, trailing: bytes = b"",
                   little_endian: bool = True) -> bytes:
    """A legacy (pre-zip) torch.save stream: header pickles, ``main`` (with persistent ids), the key list, then
    each storage's int64 element count (``counts`` overrides some) and its raw bytes."""
    info = {"protocol_version": 1001, "little_endian": little_endian,
            "type_sizes": {"short": 2, "int": 4, "long": 4}}
    keys = list(storages) if keys is None else keys
    parts = [pickle.dumps(LEGACY_MAGIC, 2), pickle.dumps(1001, 2), pickle.dumps(info, 2), _dumps_with_ids(main),
             pickle.dumps(keys, 2)]
    for key, values in storages.items():
        parts += [struct.pack("<q", (counts or {}).get(key, values.size)), values.tobytes()]
    return b"".join(parts + [trailing])


def _legacy_blob(values: np.ndarray, *, numel: int | None = None, count: int | None = None,
                 main=None, trailing: bytes = b"") -> bytes:
    """What torch.storage._load_from_bytes takes: a legacy torch.save stream of one float32 storage."""
    values = np.ascontiguousarray(values, dtype="<f4")
    numel = values.size if numel is None else numel
    main = _StorageRef("7", numel, legacy=True) if main is None else main
    return _legacy_stream(main, {"7": values}, counts={"7": values.size if count is None else count},
                          trailing=trailing)


def _legacy_save(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf, _use_new_zipfile_serialization=False)
    return buf.getvalue()


def _from_blob(blob: bytes, size, stride=None, offset=0) -> _Call:
    stride = stride or tuple(int(np.prod(size[i + 1:])) for i in range(len(size)))
    return _tensor_call(_Call(torch.storage._load_from_bytes, blob), offset, size, stride)


@pytest.fixture
def fake_modules(monkeypatch):
    """Stand-ins for NVIDIA's dnnlib and torch_utils modules, so that this test can pickle their names."""
    made = {}

    def module(name):
        for parent in ("dnnlib", "dnnlib.tflib", "torch_utils"):
            if name.startswith(parent + ".") and parent not in made:
                made[parent] = types.ModuleType(parent)
                monkeypatch.setitem(sys.modules, parent, made[parent])
        mod = made[name] = types.ModuleType(name)
        monkeypatch.setitem(sys.modules, name, mod)
        return mod

    class EasyDict(dict):
        pass

    EasyDict.__module__, EasyDict.__qualname__ = "dnnlib.util", "EasyDict"
    module("dnnlib.util").EasyDict = EasyDict

    def _reconstruct_persistent_obj(meta):
        raise AssertionError("never called")

    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    module("torch_utils.persistence")._reconstruct_persistent_obj = _reconstruct_persistent_obj

    class Network:
        def __init__(self, state):
            self._state = state

        def __getstate__(self):
            return self._state

        def __setstate__(self, state):
            raise AssertionError("never called")

    Network.__module__, Network.__qualname__ = "dnnlib.tflib.network", "Network"
    module("dnnlib.tflib.network").Network = Network
    return types.SimpleNamespace(EasyDict=EasyDict, persistent=_reconstruct_persistent_obj, Network=Network)


def _payload_code() -> str:
    return f"open({MARKER!r}, 'w').write('ran')"


# ---------------------------------------------------------------------------------------------------------
# Refused names


def _call_global(module: str, name: str, arg: str) -> bytes:
    """Protocol 2: GLOBAL module.name called with one string."""
    raw = arg.encode()
    return b"\x80\x02c" + f"{module}\n{name}\n".encode() + b"X" + struct.pack("<I", len(raw)) + raw + b"\x85R."


def _stack_global(module: str, name: str) -> bytes:
    enc = [s.encode() for s in (module, name)]
    return b"".join(b"\x8c" + bytes([len(s)]) + s for s in enc) + b"\x93"


HOSTILE = {
    "builtins.exec": pickle.dumps(_Call(exec, _payload_code()), protocol=2),
    "builtins.eval": b"\x80\x02c__builtin__\neval\nX" + struct.pack("<I", len(_payload_code()))
                     + _payload_code().encode() + b"\x85R.",  # a Python 2 name, mapped as pickle does
    "os.system": _call_global("os", "system", f"touch {MARKER}"),
    "posix.system (as pickle writes os.system)": pickle.dumps(_Call(os.system, f"touch {MARKER}"), protocol=0),
    "posix.system": b"\x80\x04" + _stack_global("posix", "system") + b"\x8c\x0ftouch " + MARKER.encode()
                    + b"\x85R.",
    "subprocess.Popen": b"(csubprocess\nPopen\n(S'touch'\nS'" + MARKER.encode() + b"'\nltR.",
    "builtins.getattr": b"\x80\x02cbuiltins\ngetattr\ncbuiltins\n__import__\nX\x02\x00\x00\x00os\x85R"
                        b"X\x06\x00\x00\x00system\x86R.",
    "builtins.__import__": b"\x80\x04" + _stack_global("builtins", "__import__") + b"\x8c\x02os\x85R.",
    "torch.load": _call_global("torch", "load", "x.pt"),
    "numpy.load": _call_global("numpy", "load", "x.npy"),
    "pickle.loads": _call_global("pickle", "loads", "x"),
    "builtins.eval (protocol 0)": b"c__builtin__\neval\n(V" + _payload_code().encode() + b"\ntR.",
    "copyreg._reconstructor": None,  # filled below: allowed itself, but only for allowed classes
    "os.system (INST)": b"(S'touch " + MARKER.encode() + b"'\nios\nsystem\n.",
}
HOSTILE["copyreg._reconstructor"] = b"ccopy_reg\n_reconstructor\n(csubprocess\nPopen\nc__builtin__\nobject\nNtR."


@pytest.mark.parametrize("what", sorted(HOSTILE))
def test_refuses_names_that_could_run_code(in_tmp, what):
    path = _write(in_tmp, "hostile.pkl", HOSTILE[what])
    qualname = {"copyreg._reconstructor": "subprocess.Popen"}.get(what, what.split(" ")[0])
    with pytest.raises(FacesynthError) as info:
        read_pickle(path)
    assert str(info.value) == _refusal(path, qualname)
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_refused_name_inside_an_embedded_storage(in_tmp):
    blob = _legacy_blob(np.ones(2), main=_Call(os.system, f"touch {MARKER}"))
    path = _write(in_tmp, "nested.pkl", pickle.dumps({"w": _from_blob(blob, (2,))}, protocol=3))
    with pytest.raises(FacesynthError) as info:
        read_pickle(path)
    assert str(info.value) == _refusal(path, "posix.system")  # os.system, as pickle names it


def test_odd_names_stay_on_one_line(in_tmp):
    path = _write(in_tmp, "odd.pkl", b"\x80\x04" + _stack_global("os\nx", "sys\x1btem") + b".")
    with pytest.raises(FacesynthError) as info:
        read_pickle(path)
    assert "\n" not in str(info.value) and "refused" in str(info.value)


@pytest.mark.parametrize("data, words", [
    (b"\x80\x04\x8f}b.", ["state of a set"]),  # BUILD on a set
    (b"\x80\x02)}b.", ["state of a tuple"]),
    (b"\x80\x02K\x01}b.", ["state of an int"]),
    (b"\x80\x02]}b.", ["state of a list"]),
    (b"\x80\x02ccollections\nOrderedDict\n)RK\x01a.", ["APPEND on an OrderedDict"]),
    (b"\x80\x02ccollections\nOrderedDict\n)R\x85K\x01K\x02s.", ["SETITEM on a tuple"]),
    (b"\x80\x04](K\x01\x90.", ["ADDITEMS on a list"]),
    (b"\x80\x02K\x01)R.", ["call an int"]),
    (b"\x80\x02K\x01)\x81.", ["create an int"]),
    (b"\x80\x02cnumpy\nndarray\n)R.", ["call numpy.ndarray"]),
    (b"\x80\x02ctorch\nFloatStorage\nK\x04\x85R.", ["call a torch storage type"]),
    (b"\x80\x02\x82\x01.", ["extension registry"]),
    (b"\x80\x02X\x01\x00\x00\x00aQ.", ["persistent id"]),
    (b"\x80\x02}]K\x01s.", ["key", "a list"]),  # an unhashable key
    (b"\x80\x02\xff.", ["unknown pickle opcode"]),
    (b"", ["EOFError"]),
    (b"\x80\x02]q\x00(K\x01K\x02", ["EOFError"]),  # truncated
    (b"\x80\x06N.", ["unsupported pickle protocol"]),
    (b"\x80\x02ccollections\nOrderedDict\n.", ["bare reference to collections.OrderedDict"]),
])
def test_misused_opcodes_are_clean_errors(in_tmp, data, words):
    _unreadable(_write(in_tmp, "bad.pkl", data), *words)


def test_build_on_a_tensor_or_array_is_refused(in_tmp):
    tensor = pickle.dumps(torch.ones(2), protocol=2)[:-1] + b"}b."
    _unreadable(_write(in_tmp, "t.pkl", tensor), "state of a Tensor")
    array = pickle.dumps(np.ones(2), protocol=2)[:-1] + b"}b."
    _unreadable(_write(in_tmp, "a.pkl", array), "state of a ndarray")


# ---------------------------------------------------------------------------------------------------------
# numpy


def _arrays() -> dict:
    rng = np.random.default_rng(0)
    out = {dt: rng.integers(0, 100, size=(2, 3)).astype(dt) for dt in
           ("f2", "f4", "f8", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8")}
    out["bool"] = np.array([[True, False], [False, True]])
    out["big"] = np.arange(6, dtype=">f4").reshape(2, 3)
    out["fortran"] = np.asfortranarray(rng.standard_normal((3, 4)).astype(np.float32))
    out["empty"] = np.zeros((0, 3), np.float32)
    out["zero_d"] = np.array(2.5, np.float64)
    out["scalar_f4"] = np.float32(1.25)
    out["scalar_i8"] = np.int64(-7)
    return out


@pytest.mark.parametrize("protocol", [0, 1, 2, 3, 4, 5])
def test_numpy_round_trip(in_tmp, protocol):
    arrays = _arrays()
    path = _write(in_tmp, "np.pkl", pickle.dumps(OrderedDict(arrays), protocol=protocol))
    back = read_pickle(path)
    assert type(back) is OrderedDict and list(back) == list(arrays)
    for key, want in arrays.items():
        got = back[key]
        assert type(got) is type(want), key
        assert np.asarray(got).dtype == np.asarray(want).dtype.newbyteorder("="), key
        assert np.array_equal(got, want), key
    assert back["fortran"].flags.f_contiguous


def _with_data(pickled: bytes, change) -> bytes:
    """A pickle with its first bytes argument's length and data replaced by change(raw)."""
    for op, arg, pos in pickletools.genops(pickled):
        if op.name in ("SHORT_BINBYTES", "BINBYTES") and len(arg) > 1:
            head = 1 + (1 if op.name == "SHORT_BINBYTES" else 4)
            new = change(arg)
            return pickled[:pos] + b"B" + struct.pack("<I", len(new)) + new + pickled[pos + head + len(arg):]
    raise AssertionError("no bytes argument")


@pytest.mark.parametrize("change", [lambda raw: raw[:-4], lambda raw: raw + b"\0" * 4, lambda raw: b""])
def test_numpy_data_of_the_wrong_length_is_refused(in_tmp, change):
    good = pickle.dumps(np.arange(4, dtype=np.float32), protocol=3)
    path = _write(in_tmp, "short.pkl", _with_data(good, change))
    _unreadable(path, "needs 16 bytes")


@pytest.mark.parametrize("array", [np.array([1, "a"], dtype=object), np.array(["ab"]), np.array([b"ab"]),
                                   np.zeros(2, dtype=[("a", "f4")]), np.zeros(2, dtype="V4"),
                                   np.zeros(2, dtype="c8")])
def test_non_numeric_dtypes_are_refused(in_tmp, array):
    path = _write(in_tmp, "obj.pkl", pickle.dumps(array, protocol=3))
    _unreadable(path, "not a plain number type")


def test_array_copies_beyond_the_file_size_are_refused(in_tmp):
    """One stored array rebuilt many times through the memo would multiply memory: it stops at the file size."""
    body = pickle.dumps(np.zeros(250_000, np.float32), protocol=3)[2:-1]
    ops = list(pickletools.genops(body + b"."))
    i = next(n for n, (op, _, _) in enumerate(ops) if op.name == "BINBYTES")
    start, end, memo_index = ops[i][2], ops[i + 1][2], ops[i + 1][1]
    again = body[:start] + b"h" + bytes([memo_index]) + body[end:]
    path = _write(in_tmp, "amplify.pkl", b"\x80\x03(" + body + again * 2000 + b"l.")
    before, t0 = _maxrss_mb(), time.perf_counter()
    _unreadable(path, "more bytes than the whole file")
    assert time.perf_counter() - t0 < 5 and _maxrss_mb() - before < 200


def test_container_copies_beyond_the_file_size_are_refused(in_tmp):
    items = b"(" + b"K\x01" * 100_000 + b"lq\x00"
    again = b"cbuiltins\nset\nh\x00\x85R"
    path = _write(in_tmp, "sets.pkl", b"\x80\x02(" + items + again * 1000 + b"l.")
    t0 = time.perf_counter()
    _unreadable(path, "copies more items")
    assert time.perf_counter() - t0 < 5


# ---------------------------------------------------------------------------------------------------------
# torch


def test_torch_save_archive_round_trip(in_tmp):
    base = torch.randn(4, 6)
    layer = torch.nn.Linear(3, 2)
    saved = {
        "weight": base,
        "transposed": base.t(),
        "row": base[1],  # shares base's storage
        "half": torch.randn(5).half(),
        "bf16": torch.randn(5).bfloat16(),
        "long": torch.arange(7),
        "int": torch.arange(3, dtype=torch.int32),
        "mask": torch.tensor([True, False, True]),
        "bytes": torch.arange(4, dtype=torch.uint8),
        "double": torch.randn(2, 2).double(),
        "empty": torch.zeros(0, 3),
        "param": torch.nn.Parameter(torch.randn(3)),
        "state": layer.state_dict(),
        "args": argparse.Namespace(size=256, lr=0.002, name="ffhq", channel_multiplier=2),
        "nested": [1, 2.5, "x", (3, None), {"k": b"v"}],
    }
    path = in_tmp / "ckpt.pt"
    torch.save(saved, path)
    back = read_pickle(path)
    for key in ("weight", "transposed", "row", "half", "bf16", "long", "int", "mask", "bytes", "double", "empty"):
        assert back[key].dtype == saved[key].dtype and torch.equal(back[key], saved[key]), key
    assert type(back["param"]) is torch.Tensor and torch.equal(back["param"], saved["param"].detach())
    assert type(back["state"]) is OrderedDict and list(back["state"]) == ["weight", "bias"]
    assert torch.equal(back["state"]["weight"], layer.weight.detach())
    assert back["state"]._metadata == layer.state_dict()._metadata
    args = back["args"]
    assert isinstance(args, InertObject) and (args.module, args.name) == ("argparse", "Namespace")
    assert args.state == vars(saved["args"])
    assert back["nested"] == saved["nested"]


def test_namespace_from_protocol_0(in_tmp):
    path = _write(in_tmp, "ns.pkl", pickle.dumps(argparse.Namespace(a=1, b="two"), protocol=0))
    back = read_pickle(path)
    assert isinstance(back, InertObject) and back.state == {"a": 1, "b": "two"}


@pytest.mark.parametrize("change, words", [
    (lambda raw: raw[:-4], ["holds 12 bytes; the pickle declares 16"]),
    (lambda raw: raw + b"\0\0\0\0", ["holds 20 bytes; the pickle declares 16"]),
])
def test_archive_member_of_the_wrong_size_is_refused(in_tmp, change, words):
    good = io.BytesIO()
    torch.save({"w": torch.arange(4.0)}, good)
    data = _rezip(good.getvalue(), lambda name, raw: change(raw) if "/data/" in name else raw)
    _unreadable(_write(in_tmp, "bad.pt", data), *words)


def test_hand_built_archive_reads(in_tmp):
    storage = _StorageRef("0", 4)
    obj = {"a": _tensor_call(storage, 0, (2, 2), (2, 1)), "b": _tensor_call(storage, 1, (3,), (1,))}
    back = read_pickle(_write(in_tmp, "ok.pt", _torch_zip(obj, {"0": np.arange(4, dtype="<f4").tobytes()})))
    assert torch.equal(back["a"], torch.tensor([[0.0, 1.0], [2.0, 3.0]]))
    assert torch.equal(back["b"], torch.tensor([1.0, 2.0, 3.0]))


@pytest.mark.parametrize("offset, size, stride, words", [
    (0, (4,), (2,), ["reaches element 6 of a storage of 4"]),
    (3, (2,), (1,), ["reaches element 4 of a storage of 4"]),
    (0, (2, 3), (3, 1), ["reaches element 5"]),
    (9, (0,), (1,), ["past a storage of 4"]),
    (-1, (1,), (1,), ["offset is not a non-negative integer"]),
    (0, (2,), (-1,), ["stride entry is not a non-negative integer"]),
    (0, (2, 2), (1,), ["size and stride differ"]),
    (0, (10**12,), (0,), ["more bytes than the whole file"]),  # stride 0: would allocate 4 TB
    (0, (1.5,), (1,), ["size entry is not a non-negative integer"]),
])
def test_tensor_views_outside_their_storage_are_refused(in_tmp, offset, size, stride, words):
    obj = {"w": _tensor_call(_StorageRef("0", 4), offset, size, stride)}
    path = _write(in_tmp, "view.pt", _torch_zip(obj, {"0": np.arange(4, dtype="<f4").tobytes()}))
    _unreadable(path, *words)


def test_archive_checks(in_tmp):
    obj = {"w": _tensor_call(_StorageRef("0", 4), 0, (4,), (1,))}
    raw = np.arange(4, dtype="<f4").tobytes()
    _unreadable(_write(in_tmp, "big.pt", _torch_zip(obj, {"0": raw}, byteorder=b"big")), "not little-endian")
    _unreadable(_write(in_tmp, "missing.pt", _torch_zip(obj, {})), "no member archive/data/0")
    bad_key = {"w": _tensor_call(_StorageRef("../0", 4), 0, (4,), (1,))}
    _unreadable(_write(in_tmp, "key.pt", _torch_zip(bad_key, {"0": raw})), "not a plain name")
    two = _rezip(_torch_zip(obj, {"0": raw}), lambda name, data: data)
    with zipfile.ZipFile(buf := io.BytesIO(two), "a") as zf:
        zf.writestr("other/data.pkl", b"\x80\x02N.")
    _unreadable(_write(in_tmp, "two.pt", buf.getvalue()), "has 2")
    _unreadable(_write(in_tmp, "cut.pt", two[: len(two) // 2]), "BadZipFile")


def test_legacy_torch_save_file_round_trip(in_tmp):
    """torch.save from PyTorch < 1.6 (rosinality's stylegan2 checkpoints such as 550000.pt): the legacy format."""
    base = torch.randn(4, 6)
    g, d = torch.nn.Linear(3, 2), torch.nn.Conv2d(2, 2, 3)
    optim = torch.optim.Adam(g.parameters())
    g(torch.randn(1, 3)).sum().backward()
    optim.step()
    saved = {
        "weight": base, "transposed": base.t(), "row": base[1], "cols": base[:, 2:5],  # views of one storage
        "half": torch.randn(5).half(), "bf16": torch.randn(3).bfloat16(), "long": torch.arange(7),
        "mask": torch.tensor([True, False, True]), "double": torch.randn(2, 2).double(), "empty": torch.zeros(0, 3),
        "param": torch.nn.Parameter(torch.randn(3)),
        "g": g.state_dict(), "d": d.state_dict(), "g_optim": optim.state_dict(),
        "args": argparse.Namespace(size=256, latent=512, channel_multiplier=2, name="ffhq"),
        "nested": [1, 2.5, "x", (3, None), {"k": b"v"}],
    }
    path = _write(in_tmp, "550000.pt", _legacy_save(saved))
    back = read_pickle(path)
    assert list(back) == list(saved)
    for key in ("weight", "transposed", "row", "cols", "half", "bf16", "long", "mask", "double", "empty"):
        assert back[key].dtype == saved[key].dtype and torch.equal(back[key], saved[key]), key
    assert type(back["param"]) is torch.Tensor and torch.equal(back["param"], saved["param"].detach())
    for key in ("g", "d"):
        assert type(back[key]) is OrderedDict and list(back[key]) == list(saved[key])
        assert all(torch.equal(back[key][k], v) for k, v in saved[key].items()), key
        assert back[key]._metadata == saved[key]._metadata
    state = back["g_optim"]["state"][0]
    assert torch.equal(state["exp_avg"], saved["g_optim"]["state"][0]["exp_avg"])
    assert back["g_optim"]["param_groups"][0]["lr"] == 0.001
    args = back["args"]
    assert isinstance(args, InertObject) and (args.module, args.name) == ("argparse", "Namespace")
    assert args.state == vars(saved["args"])
    assert back["nested"] == saved["nested"]
    assert read_pickle(_write(in_tmp, "one.pt", _legacy_save(torch.arange(3.0)))).tolist() == [0.0, 1.0, 2.0]


def _two_storages(**kwargs) -> bytes:
    """A hand-built legacy file: tensors over a float32 storage "0" (4 elements) and an int64 storage "1" (3)."""
    a, b = _StorageRef("0", 4, legacy=True), _StorageRef("1", 3, torch.LongStorage, legacy=True)
    main = kwargs.pop("main", {"a": _tensor_call(a, 0, (2, 2), (2, 1)), "b": _tensor_call(b, 0, (3,), (1,))})
    storages = {"0": np.arange(4, dtype="<f4"), "1": np.arange(3, dtype="<i8") * 10}
    return _legacy_stream(main, kwargs.pop("storages", storages), **kwargs)


def test_hand_built_legacy_file_reads(in_tmp):
    back = read_pickle(_write(in_tmp, "ok.pt", _two_storages()))
    assert torch.equal(back["a"], torch.tensor([[0.0, 1.0], [2.0, 3.0]]))
    assert torch.equal(back["b"], torch.tensor([0, 10, 20]))
    # Key order is the file's, not the pickle's; a storage named by no tensor is still listed and read.
    assert read_pickle(_write(in_tmp, "rev.pt", _two_storages(keys=["1", "0"], storages={
        "1": np.arange(3, dtype="<i8") * 10, "0": np.arange(4, dtype="<f4")})))["b"].tolist() == [0, 10, 20]


def test_legacy_storage_views_read(in_tmp):
    """Files from PyTorch < 0.4 can name a slice of a storage: (view key, offset, size) in the persistent id."""
    view = _StorageRef("0", 6, legacy=True)
    view.pid = lambda: ("storage", torch.FloatStorage, "0", "cpu", 6, ("v", 2, 3))
    whole = _StorageRef("0", 6, legacy=True)
    main = {"v": _tensor_call(view, 1, (2,), (1,)), "all": _tensor_call(whole, 0, (6,), (1,))}
    back = read_pickle(_write(in_tmp, "view.pt", _two_storages(main=main, storages={"0": np.arange(6, dtype="<f4")})))
    assert back["v"].tolist() == [3.0, 4.0] and back["all"].tolist() == list(range(6))
    view.pid = lambda: ("storage", torch.FloatStorage, "0", "cpu", 6, ("v", 4, 3))
    path = _write(in_tmp, "far.pt", _two_storages(main=main, storages={"0": np.arange(6, dtype="<f4")}))
    _unreadable(path, "a storage view ends at element 7 of a storage of 6")
    main["v"] = _tensor_call(_StorageRef("0", 6, legacy=True), 0, (6,), (1,))
    view.pid = lambda: ("storage", torch.FloatStorage, "0", "cpu", 6, ("v", 2, 3))
    main["all"] = _tensor_call(view, 1, (3,), (1,))  # within the storage, past the view
    path = _write(in_tmp, "past.pt", _two_storages(main=main, storages={"0": np.arange(6, dtype="<f4")}))
    _unreadable(path, "reaches element 3 of a storage of 3")


@pytest.mark.parametrize("kwargs, words", [
    (dict(keys=["0"]), ["lists other storages than its pickle names"]),
    (dict(keys=["0", "1", "2"]), ["lists other storages"]),
    (dict(keys=["0", "1", "1"]), ["lists other storages"]),
    (dict(keys=["0", 1]), ["lists other storages"]),
    (dict(keys=("0", "1")), ["lists other storages"]),
    (dict(counts={"0": 5}), ["storage 0 declares 4 elements (16 bytes); its data counts 5 elements"]),
    (dict(counts={"1": -1}), ["storage 1 declares 3 elements (24 bytes); its data counts -1"]),
    (dict(counts={"0": 2**40}), ["storage 0 declares 4 elements", "counts 1099511627776"]),
    (dict(main={"a": _tensor_call(_StorageRef("0", 2**40, legacy=True), 0, (4,), (1,))}, counts={"0": 2**40},
          storages={"0": np.arange(4, dtype="<f4")}), ["declares 1099511627776 elements (4398046511104 bytes)"]),
    (dict(storages={"0": np.arange(3, dtype="<f4"), "1": np.arange(3, dtype="<i8")}, counts={"0": 4}),
     ["storage 1 declares 3 elements"]),  # storage 0 runs into storage 1's count
    (dict(trailing=b"\0" * 4), ["4 bytes follow"]),
    (dict(little_endian=False), ["not little-endian"]),
    (dict(main={"a": _StorageRef("0", 4, legacy=True), "b": _StorageRef("0", 4, torch.LongStorage, legacy=True)},
          storages={"0": np.arange(4, dtype="<f4")}), ["two different types or sizes"]),
    (dict(main={"a": _StorageRef("0", 4)}, storages={"0": np.arange(4, dtype="<f4")}), ["unknown persistent id"]),
    (dict(main=_StorageRef("0", 4, legacy=True), storages={"0": np.arange(4, dtype="<f4")}),
     ["a torch storage outside any tensor"]),
])
def test_inconsistent_legacy_file_is_refused_before_allocation(in_tmp, kwargs, words):
    path = _write(in_tmp, "bad.pt", _two_storages(**kwargs))
    before, t0 = _maxrss_mb(), time.perf_counter()
    _unreadable(path, *words)
    assert time.perf_counter() - t0 < 1 and _maxrss_mb() - before < 100


def test_truncated_legacy_file_is_refused(in_tmp):
    data = _legacy_save({"w": torch.randn(8, 8), "b": torch.randn(8), "args": argparse.Namespace(size=8)})
    t0 = time.perf_counter()
    for cut in range(1, len(data), 7):
        _unreadable(_write(in_tmp, "cut.pt", data[:cut]))
    assert time.perf_counter() - t0 < 5


def test_refused_name_inside_a_legacy_file(in_tmp):
    path = _write(in_tmp, "evil.pt", _two_storages(main=_Call(os.system, f"touch {MARKER}")))
    with pytest.raises(FacesynthError) as info:
        read_pickle(path)
    assert str(info.value) == _refusal(path, "posix.system")


def test_plain_pickle_of_tensors_reads(in_tmp):
    """pickle.dumps of tensors stores each storage as torch.storage._load_from_bytes(legacy stream)."""
    saved = OrderedDict(w=torch.randn(3, 4), t=torch.randn(4, 3).t(), p=torch.nn.Parameter(torch.randn(2)),
                        h=torch.randn(3).half(), m=torch.tensor([True, False]), e=torch.zeros(0))
    for protocol in (2, 3, 4, 5):
        back = read_pickle(_write(in_tmp, f"t{protocol}.pkl", pickle.dumps(saved, protocol=protocol)))
        assert list(back) == list(saved)
        for key, want in saved.items():
            assert back[key].dtype == want.dtype and torch.equal(back[key], want.detach()), (protocol, key)


def test_hand_built_legacy_blob_reads(in_tmp):
    values = np.arange(6, dtype=np.float32)
    path = _write(in_tmp, "blob.pkl", pickle.dumps({"w": _from_blob(_legacy_blob(values), (2, 3))}, protocol=3))
    assert torch.equal(read_pickle(path)["w"], torch.from_numpy(values).reshape(2, 3))


@pytest.mark.parametrize("kwargs, words", [
    (dict(numel=2**40, count=2**40), ["declares 1099511627776 elements"]),
    (dict(numel=2**40), ["declares 1099511627776 elements"]),
    (dict(count=2**40), ["declares 6 elements"]),
    (dict(numel=7, count=7), ["declares 7 elements (28 bytes); its data counts 7 elements and 24 bytes remain"]),
    (dict(trailing=b"\0" * 4), ["4 bytes follow"]),
    (dict(main=_StorageRef("7", 6)), ["unknown persistent id"]),  # the legacy id has 6 fields
    (dict(main=_StorageRef("8", 6, legacy=True)), ["lists other storages"]),
    (dict(main=[_StorageRef("7", 6, legacy=True)]), ["something other than one storage"]),
])
def test_legacy_blob_declaring_other_sizes_is_refused_before_allocation(in_tmp, kwargs, words):
    blob = _legacy_blob(np.arange(6, dtype=np.float32), **kwargs)
    path = _write(in_tmp, "blob.pkl", pickle.dumps({"w": _from_blob(blob, (6,))}, protocol=3))
    before, t0 = _maxrss_mb(), time.perf_counter()
    _unreadable(path, *words)
    assert time.perf_counter() - t0 < 1 and _maxrss_mb() - before < 100


def test_legacy_blob_header_checks(in_tmp):
    good = _legacy_blob(np.arange(2, dtype=np.float32))
    magic = pickle.dumps(LEGACY_MAGIC, 2)
    for blob, word in [(pickle.dumps(123, 2) + good[len(magic):], "not a torch.save stream"),
                       (good[: len(good) - 3], "5 bytes remain"),
                       (good[:20], "EOFError")]:
        path = _write(in_tmp, "h.pkl", pickle.dumps({"w": _from_blob(blob, (2,))}, protocol=3))
        _unreadable(path, word)


# ---------------------------------------------------------------------------------------------------------
# NVIDIA formats, built here with stand-in modules


def test_persistence_objects_and_easydicts(in_tmp, fake_modules):
    source = _payload_code() + "\nclass Generator: pass\n"
    kwargs = fake_modules.EasyDict(z_dim=512, mapping_kwargs=fake_modules.EasyDict(num_layers=2))
    sub = {"type": "class", "version": 6, "module_src": source, "class_name": "MappingNetwork",
           "state": {"_parameters": OrderedDict(w=torch.nn.Parameter(torch.ones(2, 2))),
                     "_buffers": OrderedDict(w_avg=torch.zeros(2)), "_modules": OrderedDict(),
                     "_non_persistent_buffers_set": set(), "weight_gain": np.float64(0.5)}}
    top = dict(sub, class_name="Generator", state={"_parameters": OrderedDict(), "_buffers": OrderedDict(),
                                                   "_init_kwargs": kwargs, "_init_args": (),
                                                   "_modules": OrderedDict(mapping=_Call(fake_modules.persistent,
                                                                                         sub))})
    snapshot = {"G_ema": _Call(fake_modules.persistent, top), "training_set_kwargs": kwargs}
    for protocol in (2, 3, 4, 5):
        back = read_pickle(_write(in_tmp, "snap.pkl", pickle.dumps(snapshot, protocol=protocol)))
        g = back["G_ema"]
        assert isinstance(g, PersistentObject) and (g.class_name, g.version) == ("Generator", 6)
        assert len(g.module_src_sha256) == 64
        mapping = g.state["_modules"]["mapping"]
        assert mapping.module_src_sha256 == g.module_src_sha256
        assert torch.equal(mapping.state["_parameters"]["w"], torch.ones(2, 2))
        assert mapping.state["weight_gain"] == 0.5
        assert type(g.state["_init_kwargs"]).__name__ == "EasyDict" and g.state["_init_kwargs"] == kwargs
        assert isinstance(g.state["_init_kwargs"], dict)


@pytest.mark.parametrize("meta, words", [
    ({"type": "function", "class_name": "G", "state": {}, "module_src": ""}, ["not of type 'class'"]),
    ({"type": "class", "class_name": 3, "state": {}, "module_src": ""}, ["class name"]),
    ({"type": "class", "class_name": "G", "state": [], "module_src": ""}, ["no state dict"]),
    ({"type": "class", "class_name": "G", "state": {}, "module_src": b""}, ["no module source"]),
    ({"type": "class", "class_name": "G", "state": {}, "module_src": "", "version": "6"}, ["version"]),
    ([1, 2], ["description is not a dict"]),
])
def test_persistence_meta_is_checked(in_tmp, fake_modules, meta, words):
    path = _write(in_tmp, "meta.pkl", pickle.dumps(_Call(fake_modules.persistent, meta), protocol=4))
    _unreadable(path, *words)


def test_tf_network_records(in_tmp, fake_modules):
    def network(name, variables, components=None):
        return fake_modules.Network({
            "version": 4, "name": name, "static_kwargs": {"resolution": 32},
            "components": fake_modules.EasyDict(components or {}), "build_module_src": _payload_code(),
            "build_func_name": f"{name}_func", "variables": variables})

    mapping = network("G_mapping", [("Dense0/weight", np.ones((4, 4), np.float32))])
    g = network("G", [("lod", np.float32(0)), ("dlatent_avg", np.arange(4, dtype=np.float32))],
                {"mapping": mapping})
    for protocol in (0, 2, 3, 4):
        back = read_pickle(_write(in_tmp, "tf.pkl", pickle.dumps((g, g, g), protocol=protocol)))
        assert isinstance(back, tuple) and len(back) == 3 and all(isinstance(n, TFNetwork) for n in back)
        net = back[2]
        assert (net.name, net.version, net.static_kwargs) == ("G", 4, {"resolution": 32})
        assert [(n, v.shape) for n, v in net.variables] == [("lod", ()), ("dlatent_avg", (4,))]
        assert all(isinstance(v, np.ndarray) for _, v in net.variables)
        assert list(net.components) == ["mapping"] and net.components["mapping"].name == "G_mapping"
        assert net.state["build_module_src"] == _payload_code()  # kept as text, never run


def test_tf_network_state_is_checked(in_tmp, fake_modules):
    bad = fake_modules.Network({"name": "G", "variables": [("w", [1, 2])]})
    _unreadable(_write(in_tmp, "tf.pkl", pickle.dumps(bad, protocol=2)), "(name, array) pair")
    _unreadable(_write(in_tmp, "tf2.pkl", pickle.dumps(fake_modules.Network([1]), protocol=2)), "not a dict")


# ---------------------------------------------------------------------------------------------------------
# Resource bounds


def test_huge_memo_index_allocates_nothing(in_tmp):
    # LONG_BINPUT at 2**31 and 2**32-1, then LONG_BINGET 2**31: [[], 1].
    data = b"\x80\x02(]r\x00\x00\x00\x80r\xff\xff\xff\xff0j\x00\x00\x00\x80K\x01l."
    before, t0 = _maxrss_mb(), time.perf_counter()
    back = read_pickle(_write(in_tmp, "memo.pkl", data))
    assert back == [[], 1]
    assert time.perf_counter() - t0 < 1 and _maxrss_mb() - before < 200


def test_huge_declared_lengths_allocate_nothing(in_tmp):
    before = _maxrss_mb()
    for opcode in (b"\x96", b"\x8e", b"\x8d", b"\x95"):  # BYTEARRAY8, BINBYTES8, BINUNICODE8, FRAME
        _unreadable(_write(in_tmp, "len.pkl", b"\x80\x05" + opcode + struct.pack("<Q", 2**40) + b"."), "EOFError")
    _unreadable(_write(in_tmp, "long4.pkl", b"\x80\x02\x8b\xff\xff\xff\x7f."), "EOFError")
    assert _maxrss_mb() - before < 200


@pytest.mark.parametrize("data", [
    b"\x80\x02" + b"]" * 100_000 + b"a" * 99_999 + b".",  # 100k nested lists
    b"\x80\x02" + b"}" * 50_000 + b".",  # many dicts on the stack, the last one returned
    b"\x80\x02N" + b"\x85" * 100_000 + b".",  # 100k nested tuples
    b"\x80\x02}N" + b"\x85" * 100_000 + b"K\x01s.",  # ... used as a dict key (hashing would recurse in C)
    b"\x80\x02" + b"(" * 100_000 + b"N.",  # 100k marks, never closed
])
def test_deep_nesting_is_a_result_or_a_clean_error(in_tmp, data):
    t0 = time.perf_counter()
    try:
        read_pickle(_write(in_tmp, "deep.pkl", data))
    except FacesynthError as exc:
        assert "\n" not in str(exc)
    assert time.perf_counter() - t0 < 5


def test_deep_nesting_is_refused_past_the_limit(in_tmp):
    _unreadable(_write(in_tmp, "deep.pkl", b"\x80\x02" + b"]" * 5000 + b"a" * 4999 + b"."), "deeper than 1000")
    back = read_pickle(_write(in_tmp, "ok.pkl", b"\x80\x02" + b"]" * 500 + b"a" * 499 + b"."))
    depth = 0
    while back:
        back, depth = back[0], depth + 1
    assert depth == 499


def test_file_checks(in_tmp):
    with pytest.raises(FacesynthError, match="not a file path"):
        read_pickle(12)
    with pytest.raises(FacesynthError, match="cannot be read"):
        read_pickle(in_tmp / "absent.pkl")
    with pytest.raises(FacesynthError, match="not a regular file|cannot be read"):
        read_pickle(in_tmp)
    huge = in_tmp / "huge.pkl"
    with open(huge, "wb") as f:
        try:
            f.truncate(8 * 1024**3 + 1)  # sparse: takes no disk space
        except OSError:
            pytest.skip("this filesystem cannot hold a sparse 8 GiB file")
    t0 = time.perf_counter()
    with pytest.raises(FacesynthError, match="GiB"):
        read_pickle(huge)
    assert time.perf_counter() - t0 < 1
    huge.unlink()


# ---------------------------------------------------------------------------------------------------------
# The official fixtures (../shared)


def _fixtures() -> Path:
    if not FIXTURES.is_dir():
        pytest.skip(f"{FIXTURES} is absent (../shared holds the development data; a fresh clone has none)")
    return FIXTURES


def _module_tensors(obj: PersistentObject, prefix: str = "", out: dict | None = None) -> dict:
    out = {} if out is None else out
    for group in ("_parameters", "_buffers"):
        for name, value in (obj.state.get(group) or {}).items():
            if value is not None:
                out[prefix + name] = list(value.shape)
    for name, child in (obj.state.get("_modules") or {}).items():
        if child is not None:
            assert isinstance(child, PersistentObject)
            _module_tensors(child, f"{prefix}{name}.", out)
    return out


PT_FILES = ["pt-a-32px-skip", "pt-b-64px-paper256-fp16", "pt-c-32px-resnet", "pt-d-32px-orig-cond4"]


@pytest.mark.realdata
@pytest.mark.parametrize("stem", PT_FILES)
def test_official_pytorch_snapshots(in_tmp, stem):
    fixtures = _fixtures()
    info = json.loads((fixtures / f"{stem}.json").read_text())
    data = read_pickle(fixtures / f"{stem}.pkl")
    assert isinstance(data, dict) and list(data) == ["training_set_kwargs", "G", "D", "G_ema", "augment_pipe"]
    for key in ("G", "D", "G_ema"):
        net = data[key]
        assert isinstance(net, PersistentObject)
        want = info["D" if key == "D" else "G_ema"]
        assert net.class_name == want["class_name"]
        assert _module_tensors(net) == want["tensors"], key
    ref = np.load(fixtures / f"{stem}.ref.npz", allow_pickle=False)
    w_avg = data["G_ema"].state["_modules"]["mapping"].state["_buffers"]["w_avg"]
    assert np.array_equal(w_avg.numpy(), ref["w_avg"])
    assert data["G"].module_src_sha256 == data["D"].module_src_sha256  # one networks.py, stored once


@pytest.mark.realdata
def test_official_snapshots_share_their_source_hash():
    fixtures = _fixtures()
    hashes = {read_pickle(fixtures / f"{stem}.pkl")["G"].module_src_sha256 for stem in PT_FILES}
    evil = read_pickle(fixtures / "evil-persistence-src.pkl")["G"].module_src_sha256
    assert len(hashes) == 1 and evil not in hashes


@pytest.mark.realdata
def test_official_tf_pickle(in_tmp):
    fixtures = _fixtures()
    info = json.loads((fixtures / "tf-a-32px-skip.json").read_text())
    data = read_pickle(fixtures / "tf-a-32px-skip.pkl")
    assert isinstance(data, tuple) and len(data) == 3

    def check(net, want):
        assert isinstance(net, TFNetwork)
        assert net.static_kwargs == want["static_kwargs"]
        assert [(n, list(v.shape)) for n, v in net.variables] == [(n, s) for n, s, _ in want["variables"]]
        assert sorted(net.components) == sorted(want.get("components", {}))
        for name, comp in net.components.items():
            check(comp, want["components"][name])

    for net, key in zip(data, ("G", "D", "Gs")):
        assert net.name == key and net.version == 4
        check(net, info["networks"][key])
    w_avg = dict(data[2].variables)["dlatent_avg"]
    assert np.array_equal(w_avg, np.load(fixtures / "tf-a-32px-skip.ref.npz")["w_avg"])


@pytest.mark.realdata
def test_official_hostile_files(in_tmp):
    fixtures = _fixtures()
    path = fixtures / "evil-reduce-exec.pkl"
    with pytest.raises(FacesynthError) as info:
        read_pickle(path)
    assert str(info.value) == _refusal(path, "builtins.exec")
    persistence = read_pickle(fixtures / "evil-persistence-src.pkl")
    assert isinstance(persistence["G"], PersistentObject)
    tf = read_pickle(fixtures / "evil-tf-build-src.pkl")
    assert all(isinstance(n, TFNetwork) for n in tf) and MARKER in tf[0].state["build_module_src"]
    assert not (Path.cwd() / MARKER).exists()


# ---------------------------------------------------------------------------------------------------------
# Fuzz: mutated files give a value or a FacesynthError, quickly and in bounded memory




def _mutate(rng: random.Random, data: bytes) -> bytes:
    data = bytearray(data)
    kind = rng.randrange(5)
    if kind == 0:  # flip bytes
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
    elif kind == 1:  # truncate
        del data[rng.randrange(len(data)):]
    elif kind == 2:  # splice opcodes in
        at = rng.randrange(len(data))
        data[at:at] = b"".join(rng.choice(pickle_opcodes()) for _ in range(rng.randint(1, 4)))
    elif kind == 3:  # drop a span
        at = rng.randrange(len(data))
        del data[at:at + rng.randint(1, 16)]
    else:  # repeat a span
        at = rng.randrange(len(data))
        data[at:at] = data[at:at + rng.randint(1, 64)] * rng.randint(2, 8)
    return bytes(data)


def test_fuzzed_files_give_a_value_or_a_facesynth_error(in_tmp):
    corpus = list(checkpoint_seeds())
    cases = 300
    before = _maxrss_mb()
    outcomes = {"value": 0, "error": 0}
    slowest = 0.0
    for n in range(cases):
        rng = random.Random(n)
        path = _write(in_tmp, "fuzz.bin", _mutate(rng, corpus[n % len(corpus)]))
        t0 = time.perf_counter()
        try:
            read_pickle(path)
            outcomes["value"] += 1
        except FacesynthError as exc:
            assert str(exc).startswith(f"{path}: ") and "\n" not in str(exc)
            outcomes["error"] += 1
        slowest = max(slowest, time.perf_counter() - t0)
        assert slowest < 2, f"case {n} took {slowest:.1f} s"
    assert _maxrss_mb() - before < 500
    assert outcomes["error"] > 0
