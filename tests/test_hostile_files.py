"""Hostile files are refused and nothing is executed; a full disk or read-only output loses nothing.

1. Real pickles whose unpickling runs code (it creates a marker file), under every checkpoint suffix and as
   .safetensors, and .npz latents holding pickled object arrays: refused by every reader with one line
   naming the file, and the marker never appears.
2. Tampered safetensors (header length, header JSON, offsets, dtypes, shapes, metadata, configs with absurd
   values): one clear line, quickly, with no large allocation.
3. Config JSON (--preset FILE, a snapshot's config.json) with absurd values: refused with the field named.
4. A full disk (ENOSPC) and a read-only file system (EROFS) under snapshot writes, export, generate --out and
   project --out: one clear line, exit 2, the previous files byte-identical, no temporaries left.  Faults
   are injected by monkeypatching the writers (always), and for real on a small tmpfs when this process
   may mount one (root).
"""

from __future__ import annotations

import builtins
import errno
import hashlib
import io
import json
import math
import os
import pickle
import resource
import shutil
import struct
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch
from safetensors import SafetensorError
from safetensors.torch import save_file

from facesynth import checkpoints as ckpt
from facesynth.cli import main
from facesynth.errors import FacesynthError
from facesynth.presets import get_preset
from facesynth.training import snapshots

TINY_TALKER = dict(resolution=32, base_channels=8, max_channels=16, embed_dim=16, g_down_blocks=2, g_res_blocks=1,
                   attention=[8], batch=2, shots=2, snapshot_steps=2, content_net="none", finetune_steps=2)
PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".pkl", ".safetensors")


# --------------------------------------------------------------------------- helpers

class Payload:
    """Unpickling this calls open(marker, "w"): harmless, but it proves code ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def hostile_files(folder: Path, marker: Path) -> list[Path]:
    """torch.save'd and pickle.dump'ed payloads under every suffix, and .npz files holding object arrays."""
    folder.mkdir(parents=True, exist_ok=True)
    obj = {"G_ema.mapping.weight": torch.zeros(2), "evil": Payload(marker)}
    files = []
    for suffix in PICKLE_SUFFIXES:
        torch.save(obj, folder / f"torch-save{suffix}")
        with open(folder / f"pickle-dump{suffix}", "wb") as f:
            pickle.dump(obj, f)
        files += [folder / f"torch-save{suffix}", folder / f"pickle-dump{suffix}"]
    ws = np.empty(1, dtype=object)
    ws[0] = Payload(marker)
    np.savez(folder / "object-array.npz", ws=ws)  # savez pickles object arrays
    with open(folder / "npy-pickle.npz", "wb") as f:
        np.save(f, ws, allow_pickle=True)
    with open(folder / "plain-pickle.npz", "wb") as f:
        pickle.dump(ws, f)
    files += [folder / "object-array.npz", folder / "npy-pickle.npz", folder / "plain-pickle.npz"]
    return files


def one_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, text
    assert "Traceback" not in text
    return lines[0]


def max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def refused_quickly(fn, *args, max_seconds: float = 0.5, max_traced_mb: float = 8.0) -> str:
    """Run ``fn(*args)``: it must raise FacesynthError fast, with a one-line message, and allocate little."""
    rss = max_rss_mb()
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        with pytest.raises(FacesynthError) as info:
            fn(*args)
        seconds = time.perf_counter() - t0
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert seconds < max_seconds, f"took {seconds:.2f} s"
    assert peak < max_traced_mb * 2**20, f"allocated {peak / 2**20:.1f} MiB"
    assert max_rss_mb() - rss < 64, "resident memory grew"
    return one_line(str(info.value))


def tree_hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def temporaries(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".snapshot-")]


def write_safetensors(path: Path, header, data: bytes = b"", length: int | None = None) -> Path:
    """A file laid out as safetensors: 8-byte header length, the header (JSON of ``header`` unless bytes), data."""
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw) if length is None else length) + raw + data)
    return path


def tiny_talker_checkpoint(path: Path, config: dict | None = None, kind: str = "facesynth-talking-head") -> Path:
    from facesynth.animate.config import TalkingHeadConfig
    from facesynth.animate.model import build_networks

    cfg = TalkingHeadConfig(**TINY_TALKER)
    tensors = {}
    for name, net in build_networks(cfg, 3).items():
        tensors.update(ckpt.module_tensors(name, net))
    meta = {"kind": kind, "format": "1", "config": json.dumps(config if config is not None else cfg.to_dict())}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=meta)
    return path


@pytest.fixture(scope="module")
def small_model(tmp_path_factory) -> Path:
    """The tiny preset's G_ema alone (random weights): a valid model file to tamper with."""
    from facesynth.nets import build_generator

    cfg = get_preset("tiny")
    path = tmp_path_factory.mktemp("model") / "model.safetensors"
    save_file(ckpt.module_tensors("G_ema", build_generator(cfg)), str(path), metadata=ckpt.model_metadata(cfg, None))
    return path


# --------------------------------------------------------------------------- 1. pickles: refused, never run

def test_the_payloads_are_live(tmp_path):
    """Control: the hostile files do run code when unpickled, so the tests below prove something."""
    marker = tmp_path / "ran"
    files = hostile_files(tmp_path / "evil", marker)
    with open(files[1], "rb") as f:  # pickle-dump.pt
        pickle.load(f)
    assert marker.exists()
    marker.unlink()
    torch.load(files[0], weights_only=False)  # torch-save.pt
    assert marker.exists()
    marker.unlink()
    np.load(tmp_path / "evil" / "object-array.npz", allow_pickle=True)["ws"]
    assert marker.exists()


def _library_readers(face_dataset, tmp_path):
    """Every library function that reads weights, with the checkpoint as its one argument."""
    from facesynth.animate.evaluate import evaluate
    from facesynth.animate.finetune import finetune
    from facesynth.animate.model import load_run, read_checkpoint
    from facesynth.animate.reenact import load_talker
    from facesynth.animate.train import MetaTrainer, MetaTrainOptions
    from facesynth.metrics import compute_metrics
    from facesynth.training.loop import Trainer, TrainOptions
    from facesynth.web import ServerSettings
    from facesynth.web.app import create_app

    out = tmp_path / "outputs"
    return {
        "generate/mix/project/noise (load_generator)": lambda p: ckpt.load_generator(p),
        "read_model": lambda p: ckpt.read_model(p),
        "read_safetensors": lambda p: ckpt.read_safetensors(Path(p)),
        "export": lambda p: ckpt.export_generator(p, out / "exported.safetensors"),
        "metrics": lambda p: compute_metrics(p, None, "ppl_w", num=2, quiet=True),
        "train --resume": lambda p: Trainer(TrainOptions(data=str(face_dataset), out=str(out / "r1"), preset="tiny",
                                                         resume=str(p), quiet=True, tensorboard=False)),
        "train --init-from": lambda p: Trainer(TrainOptions(data=str(face_dataset), out=str(out / "r2"),
                                                            preset="tiny", init_from=str(p), quiet=True,
                                                            tensorboard=False)),
        "animate read_checkpoint": read_checkpoint,
        "animate load_run (eval, finetune)": load_run,
        "animate run (load_talker)": lambda p: load_talker(p, []),
        "animate finetune": lambda p: finetune(str(p), [], str(out / "person"), quiet=True),
        "animate eval": lambda p: evaluate(str(p), str(tmp_path), quiet=True),
        "animate train --resume": lambda p: MetaTrainer(MetaTrainOptions(data=str(tmp_path), out=str(out / "a"),
                                                                         resume=str(p), quiet=True)),
        "serve": lambda p: create_app(ServerSettings(ckpt=str(p), device="cpu")),
    }


def test_pickled_checkpoints_are_refused_by_every_reader_and_never_run(face_dataset, tmp_path):
    marker = tmp_path / "pwned"
    files = [f for f in hostile_files(tmp_path / "evil", marker) if f.suffix != ".npz"]
    readers = _library_readers(face_dataset, tmp_path)
    for name, read in readers.items():  # first calls import what each needs: not timed
        with pytest.raises(FacesynthError):
            read(files[0])
    for name, read in readers.items():
        for f in files:
            msg = refused_quickly(read, f, max_seconds=2.0, max_traced_mb=32)
            assert f.name in msg, (name, msg)
            assert ("pickle" in msg or "never loaded" in msg), (name, msg)
    # a snapshot folder whose model.safetensors is a pickle
    snap = tmp_path / "run" / "snapshot-000000016"
    snap.mkdir(parents=True)
    shutil.copy(tmp_path / "evil" / "torch-save.safetensors", snap / "model.safetensors")
    (snap / "state.json").write_text('{"images_seen": 16, "step": 2}')
    for name, read in readers.items():
        if name == "read_safetensors":  # takes a file, not a run folder
            continue
        msg = refused_quickly(read, tmp_path / "run", max_seconds=2.0, max_traced_mb=32)
        assert "model.safetensors" in msg and "pickle" in msg, (name, msg)
    assert not marker.exists()
    assert not (tmp_path / "outputs" / "exported.safetensors").exists()


@pytest.mark.parametrize("command", [
    ["generate", "--seeds", "1", "--out", "{out}/g.png"],
    ["mix", "--rows", "1", "--cols", "2", "--out", "{out}/m.png"],
    ["noise", "--draws", "2", "--out", "{out}/n"],
    ["interpolate", "--seeds", "0-1", "--out", "{out}/w.gif"],
    ["project", "--target", "{out}/face.png", "--out", "{out}/p", "--no-align"],
    ["metrics", "--metrics", "ppl_w", "--num", "2"],
    ["export", "--out", "{out}/e.safetensors"],
    ["train", "--data", "{data}", "--out", "{out}/r", "--preset", "tiny", "--resume"],
    ["train", "--data", "{data}", "--out", "{out}/r2", "--preset", "tiny", "--init-from"],
    ["animate", "run", "--driver", "{out}/d.mp4", "--out", "{out}/a.mp4", "--source", "{out}/face.png"],
    ["animate", "finetune", "--images", "{out}/face.png", "--out", "{out}/person"],
    ["animate", "eval", "--data", "{out}"],
    ["animate", "train", "--data", "{out}", "--out", "{out}/at", "--resume"],
    ["serve", "--port", "1"],
])
def test_every_command_refuses_a_pickle_in_one_line(command, face_dataset, tmp_path, capsys):
    marker = tmp_path / "pwned"
    files = hostile_files(tmp_path / "evil", marker)
    for f in (tmp_path / "evil" / "torch-save.safetensors", tmp_path / "evil" / "pickle-dump.pkl"):
        args = [a.format(out=tmp_path, data=face_dataset) for a in command]
        if args[-1] in ("--resume", "--init-from"):
            args.append(str(f))
        else:
            args += ["--ckpt", str(f)]
        assert main(args) == 2
        err = one_line(capsys.readouterr().err)
        assert f.name in err and "pickle" in err, err
    assert not marker.exists()
    assert len(files) == 2 * len(PICKLE_SUFFIXES) + 3


def test_the_real_cli_prints_one_line_and_no_traceback(tmp_path):
    marker = tmp_path / "pwned"
    hostile_files(tmp_path / "evil", marker)
    evil = tmp_path / "evil" / "torch-save.safetensors"
    proc = subprocess.run([sys.executable, "-m", "facesynth", "generate", "--ckpt", str(evil), "--seeds", "1",
                           "--out", str(tmp_path / "g.png")], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert proc.returncode == 2
    line = one_line(proc.stderr)
    assert line.startswith("facesynth generate: error: ") and "torch-save.safetensors" in line and "pickle" in line
    assert not marker.exists() and not (tmp_path / "g.png").exists()


def test_pickled_latents_are_refused_and_never_run(tiny_run, tmp_path, capsys):
    from facesynth.synthesis.portraits import latents_from_spec, load_latent

    marker = tmp_path / "pwned"
    files = hostile_files(tmp_path / "evil", marker)
    latents = [f for f in files if f.suffix == ".npz"] + [tmp_path / "evil" / "torch-save.pt"]
    G = ckpt.load_generator(tiny_run)
    for f in latents:
        msg = refused_quickly(load_latent, f, G)
        assert f.name in msg and ("pickle" in msg or "not a facesynth latent" in msg), msg
        refused_quickly(latents_from_spec, G, f"3,{f}", max_seconds=3.0, max_traced_mb=32)
        if f.suffix == ".npz":
            assert main(["mix", "--ckpt", str(tiny_run), "--rows", f"{f},1", "--cols", "2",
                         "--out", str(tmp_path / "m.png")]) == 2
            assert f.name in one_line(capsys.readouterr().err)
    assert "pickled Python objects" in refused_quickly(load_latent, tmp_path / "evil" / "object-array.npz", G)
    assert not marker.exists() and not (tmp_path / "m.png").exists()


@pytest.mark.parametrize("case", ["huge shape", "wrong dtype", "NaN", "empty", "not a zip", "no ws", "truncated"])
def test_damaged_latents_are_refused_before_reading_their_data(case, tiny_run, tmp_path):
    from facesynth.synthesis.portraits import load_latent

    G = ckpt.load_generator(tiny_run)
    path = tmp_path / "latent.npz"
    good = np.zeros((1, G.num_ws, G.cfg.w_dim), np.float32)
    if case == "huge shape":  # a .npy header claiming 10^12 floats, with none behind it
        buf = io.BytesIO()
        np.lib.format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False,
                                                   "shape": (1, 10**6, 10**6)})
        import zipfile

        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("ws.npy", buf.getvalue())
    elif case == "wrong dtype":
        np.savez(path, ws=good.astype(np.int64))
    elif case == "NaN":
        np.savez(path, ws=good + np.nan)
    elif case == "empty":
        path.write_bytes(b"")
    elif case == "not a zip":
        path.write_bytes(b"PK\x03\x04garbage" * 10)
    elif case == "no ws":
        np.savez(path, other=good)
    else:
        np.savez(path, ws=good)
        path.write_bytes(path.read_bytes()[:150])
    msg = refused_quickly(load_latent, path, G)
    assert "latent.npz" in msg


# --------------------------------------------------------------------------- 2. tampered safetensors

def _tamper_cases(good: Path) -> dict[str, tuple]:
    raw = good.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    data = raw[8 + n:]
    names = [k for k in header if k != "__metadata__"]
    first, second = names[0], names[1]

    def edit(fn):
        h = json.loads(json.dumps(header))
        fn(h)
        return h

    def offsets(name, start, end):
        return lambda h: h[name].__setitem__("data_offsets", [start, end])

    return {
        "header length 2^63": (header, data, 2**63),
        "header length past the end": (header, data, len(raw)),
        "header length zero": (header, data, 0),
        "header not JSON": (b"{this is not json" + b" " * 100, data, None),
        "header not UTF-8": (b"\xff\xfe" * 50, data, None),
        "header a JSON list": (b"[1, 2, 3]", data, None),
        "header a JSON string": (b'"model"', data, None),
        "header nested 100000 deep": (b"[" * 100_000 + b"]" * 100_000, data, None),
        "offsets past the end": (edit(offsets(first, 0, len(data) + 4096)), data, None),
        "offsets reversed": (edit(offsets(first, 8, 4)), data, None),
        "offsets overlapping": (edit(lambda h: h[second].__setitem__("data_offsets", h[first]["data_offsets"])),
                                data, None),
        "offsets negative": (edit(offsets(first, -4, 0)), data, None),
        "offsets not numbers": (edit(offsets(first, "0", "4")), data, None),
        "dtype unknown": (edit(lambda h: h[first].__setitem__("dtype", "F128")), data, None),
        "dtype not a string": (edit(lambda h: h[first].__setitem__("dtype", ["F32"])), data, None),
        "shape x dtype != byte range": (edit(lambda h: h[first].__setitem__("shape", h[first]["shape"] + [2])),
                                        data, None),
        "shape huge": (edit(lambda h: h[first].__setitem__("shape", [10**12, 10**12])), data, None),
        "shape negative": (edit(lambda h: h[first].__setitem__("shape", [-1])), data, None),
        "shape of floats": (edit(lambda h: h[first].__setitem__("shape", [1.5])), data, None),
        "entry not an object": (edit(lambda h: h.__setitem__(first, [1, 2])), data, None),
        "entry missing offsets": (edit(lambda h: h[first].pop("data_offsets")), data, None),
        "data shorter than header says": (header, data[:-64], None),
        "data longer than header says": (header, data + b"\0" * 64, None),
        "metadata a list": (edit(lambda h: h.__setitem__("__metadata__", ["kind"])), data, None),
        "metadata config an object": (edit(lambda h: h["__metadata__"].__setitem__("config", {"resolution": 16})),
                                      data, None),
        "file of 7 bytes": (None, b"", None),
        "empty file": (None, None, None),
    }


def test_tampered_safetensors_are_refused_quickly_without_allocating(small_model, tmp_path):
    from facesynth.animate.model import read_checkpoint

    for name, (header, data, length) in _tamper_cases(small_model).items():
        path = tmp_path / f"{name.replace(' ', '-').replace('^', '')}.safetensors"
        if header is None:
            path.write_bytes(b"\x10" * 7 if data is not None else b"")
        else:
            write_safetensors(path, header, data, length)
        for read in (ckpt.read_model, ckpt.load_generator, lambda p: ckpt.read_safetensors(Path(p)),
                     read_checkpoint):
            msg = refused_quickly(read, path)
            assert path.name in msg, (name, msg)
            assert "safetensors" in msg or "config" in msg, (name, msg)


def _with_config(small_model: Path, path: Path, cfg_changes: dict | None = None, **changes) -> Path:
    """The valid model file, its metadata config changed (tensors kept); other metadata replaced by ``changes``."""
    from safetensors import safe_open

    with safe_open(str(small_model), "pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    cfg = {**json.loads(meta["config"]), **(cfg_changes or {})}
    meta = {**meta, "config": json.dumps(cfg), **changes}  # json.dumps writes NaN and Infinity as such
    save_file(tensors, str(path), metadata=meta)
    return path


ABSURD_GAN = [
    ("resolution", 10**9), ("resolution", 2**40), ("resolution", "64"), ("resolution", 16.0), ("resolution", True),
    ("channel_max", -32), ("channel_base", 0), ("channel_base", 10**15), ("z_dim", 10**12), ("w_dim", -1),
    ("image_channels", 1000), ("batch", 10**12), ("batch", "lots"), ("mapping_layers", 10**6),
    ("g_lr", float("nan")), ("d_lr", float("inf")), ("r1_gamma", -1.0), ("gp_lambda", "x"),
    ("mbstd_group", 0), ("r1_interval", 0), ("pl_interval", -3), ("pl_batch_shrink", 0),
    ("style_mixing_prob", 7.0), ("ema_kimg", float("-inf")), ("ema_rampup", float("nan")), ("w_avg_beta", 2.0),
    ("xflip", "yes"), ("progressive", 1), ("framing", ["ffhq"]), ("arch", {"x": 1}), ("name", 12),
    ("description", "x" * 20_000), ("channel_overrides", {"16": -4}), ("channel_overrides", [16]),
    ("batch_per_res", {"16": 10**12}), ("lr_per_res", {"16": float("nan")}), ("snapshot_kimg", 0),
    ("start_resolution", 3), ("fade_kimg", float("nan")),
]


@pytest.mark.parametrize("field, value", ABSURD_GAN, ids=[f"{f}={str(v)[:12]}" for f, v in ABSURD_GAN])
def test_absurd_checkpoint_configs_are_refused_naming_the_field(field, value, small_model, tmp_path):
    path = _with_config(small_model, tmp_path / "model.safetensors", cfg_changes={field: value})
    msg = refused_quickly(ckpt.load_generator, path)
    assert "model.safetensors" in msg and field in msg, msg


@pytest.mark.parametrize("changes", [
    # Within every limit, but nothing like the tiny weights in the file: refused before any network is built.
    {"resolution": 4096, "channel_base": 2**24, "channel_max": 4096, "z_dim": 4096, "w_dim": 4096},
    {"resolution": 1024, "channel_max": 4096, "channel_base": 2**22, "mapping_layers": 32},
])
def test_a_huge_config_over_tiny_weights_is_refused_before_allocating(changes, small_model, tmp_path):
    path = _with_config(small_model, tmp_path / "model.safetensors", cfg_changes=changes)
    with pytest.raises(FacesynthError):  # the meta device's first use (seconds) is not what is timed
        ckpt.read_model(path)
    for read in (ckpt.load_generator, ckpt.read_model, lambda p: ckpt.export_generator(p, tmp_path / "e.st")):
        msg = refused_quickly(read, path, max_seconds=2.0)
        assert "do not match its config" in msg or "its config expects" in msg, msg


def _with_huge_tensor(small_model: Path, path: Path, name: str | None, nbytes: int = 4 * 2**30) -> Path:
    """The valid model file with one tensor (``name``, or its first own one if None) declared as ``nbytes`` of
    float32: a consistent header over a sparse file, so writing it costs no disk and no memory."""
    raw = small_model.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    data = raw[8 + n:]
    name = name or sorted(k for k in header if k != "__metadata__")[0]
    out, parts, end = {"__metadata__": header.pop("__metadata__")}, [], 0
    for key, entry in header.items():
        if key != name:
            start, stop = entry["data_offsets"]
            out[key] = {**entry, "data_offsets": [end, end + stop - start]}
            parts.append(data[start:stop])
            end += stop - start
    out[name] = {"dtype": "F32", "shape": [nbytes // 4], "data_offsets": [end, end + nbytes]}
    raw = json.dumps(out).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw + b"".join(parts))
        f.truncate(8 + len(raw) + end + nbytes)
    return path


@pytest.mark.parametrize("name", ["G_ema.extra", None, "D.extra"], ids=["new", "resized", "in-D"])
def test_export_refuses_a_huge_tensor_its_config_does_not_describe(name, small_model, tmp_path, capsys):
    """QA issue 23 #2: export copied a 4 GiB tensor (4.7 GB resident, a 4 GiB output) that every loader refuses."""
    path = _with_huge_tensor(small_model, tmp_path / "model.safetensors", name)
    out = tmp_path / "exported.safetensors"
    ckpt.export_generator(small_model, tmp_path / "warm.safetensors")  # the meta device's first use: not timed
    msg = refused_quickly(ckpt.export_generator, path, out, max_seconds=2.0)
    assert "model.safetensors" in msg and ("do not match its config" in msg or "its config expects" in msg), msg
    assert main(["export", "--ckpt", str(path), "--out", str(out)]) == 2
    assert one_line(capsys.readouterr().err) == f"facesynth export: error: {msg}"
    assert not out.exists() and not temporaries(tmp_path)


@pytest.mark.parametrize("growth", ['{"resolution": 1000000000}', '{"resolution": "8"}', '[8]',
                                    '{"resolution": 8, "alpha": NaN}', '{"resolution": 8, "alpha": 5}', "{nope"])
def test_absurd_growth_state_is_refused(growth, small_model, tmp_path):
    path = _with_config(small_model, tmp_path / "model.safetensors", growth=growth)
    assert "growth state" in refused_quickly(ckpt.load_generator, path)


def test_other_kinds_and_missing_config_are_refused(small_model, tmp_path):
    for meta, problem in (({"kind": "something-else"}, "not a facesynth GAN checkpoint"),
                          ({"config": ""}, "not valid JSON"), ({"config": "[" * 50_000}, "not valid JSON"),
                          ({"config": '"tiny"'}, "expected a JSON object"),
                          ({"config": '{"resolution": 16, "evil": 1}'}, "unknown config keys")):
        path = _with_config(small_model, tmp_path / "model.safetensors", **meta)
        assert problem in refused_quickly(ckpt.load_generator, path)


ABSURD_TALKER = [
    ("resolution", 10**9), ("resolution", "64"), ("base_channels", -8), ("max_channels", 10**9), ("embed_dim", 0),
    ("shots", 10**9), ("batch", 1.5), ("g_lr", float("nan")), ("d_lr", -1.0), ("fm_weight", float("inf")),
    ("betas", [2.0, "x"]), ("betas", [0.5]), ("attention", [10**9]), ("attention", "16"), ("content_size", 10**9),
    ("content_net", 7), ("spectral_norm", "no"), ("g_res_blocks", 10**6), ("snapshot_steps", 0),
]


@pytest.mark.parametrize("field, value", ABSURD_TALKER, ids=[f"{f}={str(v)[:12]}" for f, v in ABSURD_TALKER])
def test_absurd_talking_head_configs_are_refused_naming_the_field(field, value, tmp_path):
    from facesynth.animate.config import TalkingHeadConfig
    from facesynth.animate.model import read_checkpoint

    path = tiny_talker_checkpoint(tmp_path / "model.safetensors",
                                  {**TalkingHeadConfig(**TINY_TALKER).to_dict(), field: value})
    msg = refused_quickly(read_checkpoint, path)
    assert "model.safetensors" in msg and field in msg, msg


def test_a_huge_talking_head_config_over_tiny_weights_is_refused_before_allocating(tmp_path):
    from facesynth.animate.config import TalkingHeadConfig
    from facesynth.animate.model import load_run, read_checkpoint

    big = {**TalkingHeadConfig(**TINY_TALKER).to_dict(), "resolution": 1024, "base_channels": 4096,
           "max_channels": 4096, "embed_dim": 4096, "g_down_blocks": 7, "g_res_blocks": 64, "attention": [512]}
    path = tiny_talker_checkpoint(tmp_path / "model.safetensors", big)
    with pytest.raises(FacesynthError):  # the meta device's first use (seconds) is not what is timed
        read_checkpoint(path)
    for read in (read_checkpoint, load_run):
        assert "do not match its config" in refused_quickly(read, path, max_seconds=2.0)
    good = tiny_talker_checkpoint(tmp_path / "good" / "model.safetensors")
    assert read_checkpoint(good)[0] == "facesynth-talking-head"  # the check passes real checkpoints


def test_real_checkpoints_still_load(tiny_run, small_model):
    from facesynth.models import default_model

    for path in (tiny_run, small_model, default_model()):
        if path:
            assert ckpt.load_generator(path) is not None


# --------------------------------------------------------------------------- 3. config JSON files

@pytest.mark.parametrize("field, value", ABSURD_GAN[:20], ids=[f"{f}={str(v)[:12]}" for f, v in ABSURD_GAN[:20]])
def test_a_config_json_with_absurd_values_is_refused_naming_the_field(field, value, tiny_run, face_dataset,
                                                                      tmp_path, capsys):
    snap = ckpt.list_snapshots(tiny_run)[-1]
    cfg = json.loads((snap / "config.json").read_text())  # a snapshot's config.json, used as --preset
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**cfg, field: value}))
    assert field in refused_quickly(get_preset, str(path))
    assert main(["train", "--data", str(face_dataset), "--out", str(tmp_path / "r"), "--preset", str(path),
                 "--kimg", "0.008", "--quiet"]) == 2
    err = one_line(capsys.readouterr().err)
    assert "config.json" in err and field in err
    assert not ckpt.list_snapshots(tmp_path / "r")


@pytest.mark.parametrize("text", ["[" * 100_000, '{"resolution": 16, "batch": NaN}', '{"z_dim": 1e400}',
                                  '{"resolution": -16}'])
def test_config_json_nesting_and_non_numbers_are_refused(text, tmp_path):
    path = tmp_path / "deep.json"
    path.write_text(text)
    assert "deep.json" in refused_quickly(get_preset, str(path))


def test_settings_on_the_command_line_are_checked_alike(face_dataset, tmp_path, capsys):
    assert main(["train", "--data", str(face_dataset), "--out", str(tmp_path / "r"), "--preset", "tiny",
                 "--set", "mbstd_group=0", "--kimg", "0.008", "--quiet"]) == 2
    assert "mbstd_group" in one_line(capsys.readouterr().err)
    assert main(["train", "--data", str(face_dataset), "--out", str(tmp_path / "r"), "--preset", "tiny",
                 "--set", "g_lr=NaN", "--kimg", "0.008", "--quiet"]) == 2
    assert "g_lr" in one_line(capsys.readouterr().err)


# --------------------------------------------------------------------------- 4. full disk, read-only output

class FaultyFile:
    """A file opened for writing on a disk with ``budget`` bytes left: writes beyond it fail with ENOSPC."""

    def __init__(self, f, budget: dict, code: int):
        self._f, self._budget, self._code = f, budget, code

    def write(self, data):
        n = len(data) if isinstance(data, str) else memoryview(data).nbytes
        if n > self._budget["left"]:
            if self._budget["left"] > 0:
                self._f.write(data[:self._budget["left"]])  # half-way, as a real disk fills
            self._budget["left"] = 0
            raise OSError(self._code, os.strerror(self._code))
        self._budget["left"] -= n
        return self._f.write(data)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()

    def __iter__(self):
        return iter(self._f)

    def __getattr__(self, name):
        return getattr(self._f, name)


def inject_write_fault(monkeypatch, root: Path, code: int, budget: int = 4096) -> None:
    """Writes under ``root`` fail as on a full disk (ENOSPC after ``budget`` bytes) or a read-only file
    system (EROFS on creating anything): Python's open/os.open/os.mkdir, and safetensors' (Rust) writer."""
    root = os.path.realpath(root)
    left = {"left": budget}
    real_open, real_os_open, real_mkdir = builtins.open, os.open, os.mkdir
    real_save = safetensors.torch.save_file

    def under(p) -> bool:
        try:
            return os.path.realpath(os.fspath(p)).startswith(root + os.sep)
        except TypeError:
            return False

    def fault(p=None):
        return OSError(code, os.strerror(code), *([os.fspath(p)] if p is not None else []))

    def faulty_open(file, mode="r", *args, **kwargs):
        writing = any(c in mode for c in "wax+")
        if writing and under(file):
            if code == errno.EROFS:
                raise fault(file)
            return FaultyFile(real_open(file, mode, *args, **kwargs), left, code)
        return real_open(file, mode, *args, **kwargs)

    def faulty_os_open(path, flags, *args, **kwargs):
        if code == errno.EROFS and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) and under(path):
            raise fault(path)
        return real_os_open(path, flags, *args, **kwargs)

    def faulty_mkdir(path, *args, **kwargs):
        if code == errno.EROFS and under(path):
            raise fault(path)
        return real_mkdir(path, *args, **kwargs)

    def faulty_save(tensors, filename, metadata=None):
        if not under(filename):
            return real_save(tensors, filename, metadata=metadata)
        if code == errno.EROFS:
            raise SafetensorError(f"Error while serializing: I/O error: {os.strerror(code)} (os error {code})")
        with real_open(filename, "wb") as f:  # what the Rust writer leaves: the start of the file
            f.write(b"\0" * min(left["left"], 1000))
        left["left"] = 0
        raise SafetensorError(f"Error while serializing: I/O error: {os.strerror(code)} (os error {code})")

    monkeypatch.setattr(builtins, "open", faulty_open)
    monkeypatch.setattr(io, "open", faulty_open)
    monkeypatch.setattr(os, "open", faulty_os_open)
    monkeypatch.setattr(os, "mkdir", faulty_mkdir)
    monkeypatch.setattr(safetensors.torch, "save_file", faulty_save)


FAULTS = {"disk full": (errno.ENOSPC, "no space left on device writing"), "read-only": (errno.EROFS, "is read-only")}


@pytest.fixture
def run_copy(tiny_run, tmp_path) -> Path:
    """A finished tiny run with its snapshots, that this test may write into."""
    out = tmp_path / "out" / "run"
    shutil.copytree(tiny_run, out)
    for p in temporaries(out):
        p.unlink()
    return out


def _resumed_trainer(run: Path, face_dataset: Path):
    from facesynth.training.loop import Trainer, TrainOptions

    return Trainer(TrainOptions(data=str(face_dataset), out=str(run), preset="tiny", kimg=1.0, resume="auto",
                                quiet=True, tensorboard=False, grid_size=4))


def _check_nothing_lost(folder: Path, before: dict[str, str], allowed_new=()) -> None:
    after = tree_hashes(folder)
    changed = [k for k in before if after.get(k) != before[k]]
    assert not changed, f"changed or lost: {changed}"
    new = [k for k in set(after) - set(before) if not any(k.startswith(a) for a in allowed_new)]
    assert not new, f"left behind: {new}"
    assert not temporaries(folder)


@pytest.mark.parametrize("fault", FAULTS)
def test_snapshot_write_fails_cleanly_and_keeps_earlier_snapshots(fault, run_copy, face_dataset, monkeypatch):
    code, words = FAULTS[fault]
    trainer = _resumed_trainer(run_copy, face_dataset)
    trainer.images_seen += 8  # a new snapshot name: nothing may be overwritten either
    before = tree_hashes(run_copy)
    inject_write_fault(monkeypatch, run_copy, code, budget=2000)
    with pytest.raises(FacesynthError) as info:
        trainer.save()
    msg = one_line(str(info.value))
    assert str(run_copy) in msg and ("No space left" in msg or "Read-only" in msg or words in msg), msg
    with pytest.raises(FacesynthError, match=words):
        snapshots.save_generator_history(run_copy, trainer.cfg, trainer.G_ema, trainer.images_seen)
    monkeypatch.undo()
    _check_nothing_lost(run_copy, before)
    assert ckpt.load_generator(run_copy) is not None  # the run still resumes from its last good snapshot


@pytest.mark.parametrize("fault", FAULTS)
def test_training_through_the_cli_stops_with_one_line(fault, run_copy, face_dataset, monkeypatch, capsys):
    code, _ = FAULTS[fault]
    before = tree_hashes(run_copy)
    stats = (run_copy / "stats.jsonl").read_bytes()
    inject_write_fault(monkeypatch, run_copy, code, budget=0)
    rc = main(["train", "--data", str(face_dataset), "--out", str(run_copy), "--preset", "tiny", "--resume", "auto",
               "--kimg", "0.048", "--quiet", "--no-history"])
    monkeypatch.undo()
    assert rc == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    err = one_line(err.strip().splitlines()[-1])  # after the "resumed from ..." note
    assert err.startswith("facesynth train: error:"), err
    # Read-only: refused with the folder named before training.  Disk full: the first write, the append to
    # stats.jsonl, names its file.
    assert str(run_copy) in err and (code == errno.EROFS or "no space left on device" in err), err
    assert (run_copy / "stats.jsonl").read_bytes().startswith(stats)  # an append-only log keeps what it had
    before.pop("stats.jsonl")
    _check_nothing_lost(run_copy, before, allowed_new=("stats.jsonl", "tensorboard/"))


@pytest.mark.parametrize("fault", FAULTS)
def test_export_generate_and_project_fail_cleanly_and_keep_previous_outputs(fault, run_copy, tmp_path,
                                                                           monkeypatch, capsys):
    from PIL import Image

    from facesynth.synthesis import portraits

    code, words = FAULTS[fault]
    out = tmp_path / "outputs"
    photo = tmp_path / "face.png"
    Image.fromarray(np.full((32, 32, 3), 128, np.uint8)).save(photo)
    pixel = lambda a, b: (a - b).square().mean(dim=(1, 2, 3))  # noqa: E731  (no Inception download needed)
    monkeypatch.setattr(portraits, "default_distance", lambda G, lpips=None, inception=None: (pixel, "pixel"))
    commands = {
        "export": ["export", "--ckpt", str(run_copy), "--out", str(out / "g.safetensors")],
        "generate --out grid": ["generate", "--ckpt", str(run_copy), "--seeds", "0-3", "--out", str(out / "grid.png")],
        "generate --out folder": ["generate", "--ckpt", str(run_copy), "--seeds", "0-1", "--out", str(out / "seeds")],
        "project --out": ["project", "--ckpt", str(run_copy), "--target", str(photo), "--out", str(out / "proj"),
                          "--no-align", "--steps", "2", "--no-identity", "--no-video", "--quiet"],
    }
    for name, args in commands.items():  # the previous outputs
        assert main(args) == 0, name
    capsys.readouterr()
    before = tree_hashes(out)
    run_before = tree_hashes(run_copy)
    for name, args in commands.items():
        if name.startswith("generate"):  # other faces: the outputs would differ if written
            args[args.index("--seeds") + 1] = "5-8"
        inject_write_fault(monkeypatch, out, code, budget=300)
        rc = main(args)
        monkeypatch.undo()
        monkeypatch.setattr(portraits, "default_distance", lambda G, lpips=None, inception=None: (pixel, "pixel"))
        assert rc == 2, name
        err = one_line(capsys.readouterr().err)
        assert words in err and str(out) in err, (name, err)
        _check_nothing_lost(out, before)
    _check_nothing_lost(run_copy, run_before)


# --------------------------------------------------------------------------- 4b. the same, on a real file system

@pytest.fixture
def tmpfs(tmp_path):
    """A real 16 MiB tmpfs (needs root and mount); skipped where this process cannot mount one."""
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode(errors='replace').strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def fill(mnt: Path) -> None:
    """Fill the file system to the last byte."""
    for i, size in enumerate((2**16, 2**12, 1)):
        with open(mnt / f"filler-{i}", "wb", buffering=0) as f:
            try:
                while True:
                    f.write(b"\0" * size)
            except OSError as e:
                assert e.errno == errno.ENOSPC


def remount_read_only(mnt: Path) -> None:
    r = subprocess.run(["mount", "-o", "remount,ro", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip("cannot remount read-only here")


@pytest.mark.parametrize("fault", FAULTS)
def test_on_a_real_full_or_read_only_disk_nothing_is_lost(fault, tiny_run, face_dataset, tmpfs, monkeypatch,
                                                          capsys):
    code, words = FAULTS[fault]
    run = tmpfs / "run"
    shutil.copytree(tiny_run, run)
    for p in temporaries(run):
        p.unlink()
    out = tmpfs / "out"
    assert main(["generate", "--ckpt", str(run), "--seeds", "0-3", "--out", str(out / "grid.png")]) == 0
    assert main(["export", "--ckpt", str(run), "--out", str(out / "g.safetensors")]) == 0
    trainer = _resumed_trainer(run, face_dataset)
    trainer.images_seen += 8
    capsys.readouterr()
    before = tree_hashes(tmpfs)
    if code == errno.ENOSPC:
        fill(tmpfs)
    else:
        remount_read_only(tmpfs)
    with pytest.raises(FacesynthError) as info:
        trainer.save()
    assert str(run) in str(info.value)
    for args in (["export", "--ckpt", str(run), "--out", str(out / "g.safetensors")],
                 ["generate", "--ckpt", str(run), "--seeds", "5-8", "--out", str(out / "grid.png")]):
        assert main(args) == 2
        err = one_line(capsys.readouterr().err)
        assert words in err, err
    subprocess.run(["mount", "-o", "remount,rw", str(tmpfs)], capture_output=True)
    for p in tmpfs.glob("filler-*"):
        p.unlink()
    _check_nothing_lost(tmpfs, before)
    assert math.isfinite(float(ckpt.load_generator(run).cfg.g_lr))


def test_snapshot_into_a_read_only_folder_raises_the_clear_error(run_copy, face_dataset, monkeypatch):
    trainer = _resumed_trainer(run_copy, face_dataset)
    trainer.images_seen += 8
    inject_write_fault(monkeypatch, run_copy, errno.EROFS)
    with pytest.raises(FacesynthError, match="read-only"):
        trainer.save()
