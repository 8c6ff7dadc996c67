"""Snapshots: safetensors for every tensor, JSON for everything else.  Nothing is ever unpickled.

A snapshot is a folder ``snapshot-NNNNNNNN/`` (NNNNNNNN = images seen) holding
  model.safetensors     G, D and G_ema weights and buffers; the config in its metadata
  training.safetensors  optimizer moments and RNG states
  config.json           the GANConfig that rebuilds the networks
  state.json            progress counters (images seen, steps, ...)
It is written under a temporary name and renamed when complete, then
``latest.json`` in the run folder is atomically pointed at it.  Only the last
few snapshots are kept; ``history/`` keeps every snapshot's G_ema alone.
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
import shutil
import struct
import sys
import tempfile
from pathlib import Path

import safetensors.torch
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from ..errors import FacesynthError
from ..presets import GANConfig
from ..util.atomic import atomic_path, dir_mode, file_mode, write_bytes_atomic, write_error, write_json_atomic

KIND = "facesynth-gan"
FORMAT_VERSION = 1
MODEL_FILE = "model.safetensors"
TRAINING_FILE = "training.safetensors"
SNAPSHOT_PREFIX = "snapshot-"
LATEST = "latest.json"
METRICS_LOG = "metrics.jsonl"
HISTORY_DIR = "history"
MAX_HEADER_BYTES = 100 * 2**20


# --------------------------------------------------------------------------- tensors <-> modules

def module_tensors(prefix: str, module: nn.Module) -> dict[str, torch.Tensor]:
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
    sub = {k[len(prefix) + 1:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}
    check_same_tensors(source, prefix, {k: v.shape for k, v in module.state_dict().items()},
                       {k: v.shape for k, v in sub.items()})
    module.load_state_dict(sub)


def optimizer_tensors(prefix: str, opt: torch.optim.Optimizer, names: dict[int, str]) -> dict[str, torch.Tensor]:
    """Adam moments keyed by parameter name (not position), so they survive code reordering."""
    out = {}
    for group in opt.param_groups:
        for p in group["params"]:
            st = opt.state.get(p)
            if not st:
                continue
            name = names[id(p)]
            for k, v in st.items():
                t = v if torch.is_tensor(v) else torch.tensor(float(v))
                out[f"{prefix}.{name}.{k}"] = t.detach().cpu().contiguous()
    return out


def load_optimizer_tensors(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], prefix: str,
                           names: dict[int, str]) -> None:
    device_steps = bool(opt.defaults.get("fused") or opt.defaults.get("capturable"))
    for group in opt.param_groups:
        for p in group["params"]:
            name = names[id(p)]
            st = {}
            for k in ("step", "exp_avg", "exp_avg_sq"):
                key = f"{prefix}.{name}.{k}"
                if key in tensors:
                    v = tensors[key]
                    if k != "step":  # the moments take the parameter's device and memory layout
                        st[k] = torch.empty_like(p).copy_(v)
                    else:  # fused and capturable Adam keep the step count on the device, the others on the CPU
                        st[k] = v.to(p.device if device_steps else "cpu", torch.float32, copy=True)
            if st:
                opt.state[p] = st


# --------------------------------------------------------------------------- reading safely

# Bytes per element of every dtype safetensors writes; anything else in a header is refused.
DTYPE_SIZES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
               "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}
MAX_DIMS = 16
PICKLE_SUFFIXES = (".pkl", ".pickle", ".pt", ".pth", ".ckpt", ".bin", ".tar")
_PICKLE_SIGNS = ((b"PK\x03\x04", "a zip archive (torch.save's format, or an .npz: it may hold pickled Python)"),
                 (b"\x80", "a Python pickle"), (b"\x93NUMPY", "a NumPy array file"))


def _what_is(head: bytes) -> str:
    for sign, what in _PICKLE_SIGNS:
        if head.startswith(sign):
            return what
    return "a damaged file or another format"


def safetensors_header(path: Path) -> tuple[dict, dict[str, tuple[str, tuple[int, ...]]]]:
    """(metadata, {name: (dtype, shape)}) of a safetensors file, after checking every field of its header
    against the file: nothing is unpickled, and nothing larger than the header is read or allocated."""
    path = Path(path)

    def bad(problem: str) -> FacesynthError:
        return FacesynthError(f"{path}: not a valid safetensors file ({problem})")

    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise bad("too short")
            (n,) = struct.unpack("<Q", head)
            if n <= 1 or n > MAX_HEADER_BYTES or n + 8 > size:
                what = _what_is(head)
                if what != "a damaged file or another format":
                    raise FacesynthError(f"{path}: refused: this is {what}, not safetensors; facesynth never "
                                         "loads pickles (they can run code)")
                raise bad(f"header length {n} does not fit a file of {size} bytes")
            raw = f.read(n)
        header = json.loads(raw.decode("utf-8"))
    except FacesynthError:
        raise
    except FileNotFoundError:
        raise FacesynthError(f"{path}: no such file") from None
    except OSError as e:
        raise FacesynthError(f"{path}: cannot read ({e.strerror or e})") from None
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        if _what_is(head) != "a damaged file or another format":
            raise FacesynthError(f"{path}: refused: this is {_what_is(head)}, not safetensors; facesynth never "
                                 "loads pickles (they can run code)") from None
        raise bad(f"header is not JSON: {type(e).__name__}") from None
    if not isinstance(header, dict):
        raise bad(f"header is a JSON {type(header).__name__}, not an object")
    meta = header.pop("__metadata__", None)
    if meta is None:
        meta = {}
    if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise bad("__metadata__ must map names to strings")
    data_size = size - 8 - n
    tensors, spans = {}, []
    for name, entry in header.items():
        if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
            raise bad(f"tensor {name!r} is not described by exactly dtype, shape and data_offsets")
        dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if not isinstance(dtype, str) or dtype not in DTYPE_SIZES:
            raise bad(f"tensor {name!r} has unknown dtype {str(dtype)[:20]!r}")
        if (not isinstance(shape, list) or len(shape) > MAX_DIMS
                or not all(type(d) is int and 0 <= d <= data_size for d in shape)):
            raise bad(f"tensor {name!r} has an invalid shape {str(shape)[:60]}")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int for o in offsets)
                and 0 <= offsets[0] <= offsets[1] <= data_size):
            raise bad(f"tensor {name!r} has data offsets {str(offsets)[:60]} outside the file's "
                      f"{data_size} data bytes")
        if math.prod(shape) * DTYPE_SIZES[dtype] != offsets[1] - offsets[0]:
            raise bad(f"tensor {name!r}: shape {shape} x {dtype} needs {math.prod(shape) * DTYPE_SIZES[dtype]} "
                      f"bytes, its data range holds {offsets[1] - offsets[0]}")
        tensors[name] = (dtype, tuple(shape))
        spans.append((offsets[0], offsets[1], name))
    end = 0
    for start, stop, name in sorted(spans):
        if start != end:
            raise bad(f"tensor {name!r} overlaps another or leaves a gap (data at byte {start}, expected {end})")
        end = stop
    if end != data_size:
        raise bad(f"the tensors cover {end} of the file's {data_size} data bytes")
    return meta, tensors


def check_safetensors(path: Path) -> dict:
    """Validate the header of a safetensors file before handing it to the loader; returns its metadata."""
    return safetensors_header(path)[0]


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    check_safetensors(path)
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise FacesynthError(f"{path}: damaged safetensors file ({e})") from None


def save_file(tensors: dict[str, torch.Tensor], filename: str, metadata: dict[str, str] | None = None) -> None:
    """safetensors' save_file, with its I/O failures (a full disk, a read-only folder) raised as OSError
    with their errno, so the callers' write handling (temporary files removed, one clear line) applies."""
    try:
        safetensors.torch.save_file(tensors, filename, metadata=metadata)
    except SafetensorError as e:
        m = re.search(r"os error (\d+)", str(e))
        if m:
            code = int(m.group(1))
            raise OSError(code, os.strerror(code), filename) from None
        if "I/O error" in str(e) or "Io(" in str(e):
            raise OSError(errno.EIO, str(e), filename) from None
        raise


def read_json(path: Path, what: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            obj = json.load(f)
    except FileNotFoundError:
        raise FacesynthError(f"{path}: missing {what}") from None
    except (OSError, ValueError, RecursionError) as e:
        raise FacesynthError(f"{path}: unreadable {what} ({type(e).__name__}: {str(e)[:200]})") from None
    if not isinstance(obj, dict):
        raise FacesynthError(f"{path}: {what} must be a JSON object")
    return obj


# --------------------------------------------------------------------------- snapshots

def snapshot_name(images_seen: int) -> str:
    return f"{SNAPSHOT_PREFIX}{images_seen:09d}"


def model_metadata(cfg: GANConfig, growth: dict | None, kind: str = KIND) -> dict[str, str]:
    """The safetensors metadata of a model file: its kind, the config, and where growing stood."""
    meta = {"kind": kind, "format": str(FORMAT_VERSION), "config": json.dumps(cfg.to_dict())}
    if growth:
        meta["growth"] = json.dumps(growth)
    return meta


def growth_of(generator: nn.Module | None) -> dict | None:
    return generator.growth_state() if generator is not None and hasattr(generator, "growth_state") else None


def save_snapshot(run_dir: Path, cfg: GANConfig, models: dict[str, nn.Module], training: dict[str, torch.Tensor],
                  state: dict, keep: int = 3, kind: str = KIND) -> Path:
    """Write one complete snapshot folder atomically and point latest.json at it (any config with
    ``to_dict``; ``kind`` names the model family in the file's metadata)."""
    run_dir = Path(run_dir)
    final = run_dir / snapshot_name(int(state["images_seen"]))
    try:
        tmp = Path(tempfile.mkdtemp(prefix=".snapshot-", suffix=".tmp", dir=run_dir))
    except OSError as e:
        raise write_error(run_dir, e) from None
    try:
        tensors = {}
        for prefix, m in models.items():
            tensors.update(module_tensors(prefix, m))
        save_file(tensors, str(tmp / MODEL_FILE), metadata=model_metadata(cfg, growth_of(models.get("G_ema")), kind))
        save_file({k: v.contiguous() for k, v in training.items()}, str(tmp / TRAINING_FILE),
                  metadata={"kind": kind + "-training", "format": str(FORMAT_VERSION)})
        (tmp / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
        (tmp / "state.json").write_text(json.dumps(state, indent=2) + "\n")
        for f in tmp.iterdir():
            os.chmod(f, file_mode())
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        os.chmod(tmp, dir_mode())  # mkdtemp makes 0700
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(run_dir)  # the rename itself survives a power cut
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise FacesynthError(f"could not write a snapshot: {write_error(run_dir, e)}; "
                             "earlier snapshots are intact") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    write_json_atomic(run_dir / LATEST, {"snapshot": final.name, "images_seen": int(state["images_seen"])})
    _prune(run_dir, keep, protect=final.name)
    return final


def history_path(run_dir: Path, images_seen: int) -> Path:
    return Path(run_dir) / HISTORY_DIR / f"G_ema-{images_seen:09d}.safetensors"


def save_generator_history(run_dir: Path, cfg: GANConfig, G_ema: nn.Module, images_seen: int) -> Path:
    """G_ema alone as history/G_ema-NNNNNNNNN.safetensors: small, loadable by generate and metrics,
    and kept after the full snapshot it came with has been pruned.  Training writes it before the snapshot,
    so every published snapshot has its entry."""
    path = history_path(run_dir, images_seen)
    with atomic_path(path) as tmp:
        save_file(module_tensors("G_ema", G_ema), str(tmp), metadata=model_metadata(cfg, growth_of(G_ema)))
    return path


def restore_generator_history(run_dir: Path) -> list[Path]:
    """Write the missing history entry of every GAN snapshot in ``run_dir`` from the snapshot's own G_ema.

    Runs killed by older versions (which wrote the entry after publishing the snapshot) can lack one.  The
    snapshot's G_ema tensors and metadata are what save_generator_history wrote then, so the entry is the
    same.  Returns the entries written; a snapshot that cannot be read is reported and left out.
    """
    written = []
    for snap in list_snapshots(run_dir):
        images = snap.name[len(SNAPSHOT_PREFIX):]
        path = history_path(run_dir, int(images)) if images.isdigit() else None
        if path is None or path.is_file():
            continue
        model = snap / MODEL_FILE
        try:
            meta = check_safetensors(model)
            if meta.get("kind") != KIND:  # another family's snapshots (animate) keep no history
                continue
            g = {k: v for k, v in read_safetensors(model).items() if k.startswith("G_ema.")}
        except FacesynthError as e:  # an older snapshot's damage must not stop the run resuming
            print(f"warning: no history entry for {snap.name}: {e}", file=sys.stderr)
            continue
        if not g:
            continue
        with atomic_path(path) as tmp:
            save_file(g, str(tmp), metadata=meta)
        written.append(path)
    return written


def list_generator_history(run_dir: Path) -> list[Path]:
    return sorted((Path(run_dir) / HISTORY_DIR).glob("G_ema-*.safetensors"))


def run_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """Every evaluable point of a run, oldest first: (images seen, model file), history preferred."""
    found: dict[int, Path] = {}
    for snap in list_snapshots(run_dir):
        found[int(snap.name[len(SNAPSHOT_PREFIX):])] = snap / MODEL_FILE
    for hist in list_generator_history(run_dir):
        found[int(hist.stem.split("-")[-1])] = hist
    return sorted(found.items())


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems do not sync directories
        pass
    finally:
        os.close(fd)


def best_snapshot(run_dir: Path, metric: str = "fid") -> str | None:
    """Name of the snapshot with the lowest ``metric`` (any count: fid2k, fid50k ...) in metrics.jsonl."""
    best = None
    for record in read_jsonl(Path(run_dir) / METRICS_LOG):
        name = record.get("metric", "")
        if not str(name).startswith(metric) or record.get("kimg") is None:
            continue
        value = (record.get("results") or {}).get(name)
        if isinstance(value, (int, float)) and value == value and (best is None or value < best[0]):
            best = (value, snapshot_name(round(float(record["kimg"]) * 1000)))
    return best[1] if best else None


def _prune(run_dir: Path, keep: int, protect: str) -> None:
    """Keep the newest ``keep`` snapshots, the best by FID, and always the one just written."""
    if keep <= 0:
        return
    keep_names = {protect, best_snapshot(run_dir)}
    for old in list_snapshots(run_dir)[:-keep]:
        if old.name not in keep_names:
            shutil.rmtree(old, ignore_errors=True)


def clean_stale_temporaries(run_dir: Path) -> list[Path]:
    """Remove what a killed writer left behind: ``.snapshot-*.tmp`` folders and ``.*.tmp`` files."""
    run_dir = Path(run_dir)
    removed = []
    for folder in (run_dir, run_dir / HISTORY_DIR):
        if not folder.is_dir():
            continue
        for p in folder.iterdir():
            if p.name.startswith(".") and p.name.endswith(".tmp"):
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
                removed.append(p)
    return removed


def read_jsonl(path: Path) -> list[dict]:
    """The complete JSON lines of a log (a line torn by a crash is skipped)."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    out = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            out.append(record)
    return out


def rewind_log(path: Path, keep) -> int:
    """Rewrite a JSON-lines log with only the records ``keep(record)`` accepts (and no torn lines), atomically.

    A resumed run rewinds its logs to the snapshot it resumes from, so that the steps it repeats are not
    logged twice.  Returns how many lines were dropped.
    """
    path = Path(path)
    if not path.is_file():
        return 0
    total = len(path.read_text(encoding="utf-8", errors="replace").splitlines())
    kept = [r for r in read_jsonl(path) if keep(r)]
    if len(kept) != total:
        write_bytes_atomic(path, "".join(json.dumps(r) + "\n" for r in kept).encode())
    return total - len(kept)


def list_snapshots(run_dir: Path) -> list[Path]:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    snaps = [p for p in run_dir.iterdir() if p.is_dir() and p.name.startswith(SNAPSHOT_PREFIX)
             and (p / MODEL_FILE).is_file() and (p / "state.json").is_file()]
    return sorted(snaps, key=lambda p: p.name)


def find_resume(out: Path, resume: str | None) -> Path | None:
    """The model file a run in ``out`` resumes from: none for a new run (refused if ``out`` holds one),
    its latest snapshot for "auto" (none yet: a new run), or the checkpoint named."""
    if resume is None:
        if list_snapshots(out):
            raise FacesynthError(f"{out} already holds a run: pass --resume auto to continue it, "
                                 "or choose another --out")
        return None
    if resume == "auto":
        return resolve_checkpoint(out) if list_snapshots(out) else None
    return resolve_checkpoint(resume)


def resolve_checkpoint(path: str | Path) -> Path:
    """A run folder (-> its latest snapshot), a snapshot folder, or a model.safetensors file -> model file path."""
    path = Path(path)
    if not path.exists():
        raise FacesynthError(f"{path}: no such checkpoint")
    if path.is_file():
        if path.suffix.lower() in PICKLE_SUFFIXES:
            raise FacesynthError(f"{path}: pickled checkpoints are never loaded (they can run code); "
                                 "facesynth reads .safetensors only")
        return path
    if (path / MODEL_FILE).is_file():
        return path / MODEL_FILE
    latest = path / LATEST
    if latest.is_file():
        name = read_json(latest, "latest-snapshot pointer").get("snapshot", "")
        cand = path / str(name)
        if (cand / MODEL_FILE).is_file() and cand.parent == path:
            return cand / MODEL_FILE
    snaps = list_snapshots(path)
    if snaps:
        return snaps[-1] / MODEL_FILE
    raise FacesynthError(f"{path}: holds no facesynth snapshot (expected {MODEL_FILE} or {SNAPSHOT_PREFIX}* folders)")


def read_model_file(path: str | Path) -> tuple[GANConfig, dict[str, torch.Tensor]]:
    """Config and tensors of a model.safetensors, refusing files of any other kind."""
    cfg, tensors, _ = read_model(path)
    return cfg, tensors


def config_from_metadata(meta: dict, config_class, path: Path):
    """The config a model file's metadata carries, validated as ``config_class``."""
    try:
        cfg_dict = json.loads(meta.get("config", ""))
    except (ValueError, TypeError, RecursionError):
        raise FacesynthError(f"{path}: checkpoint config is not valid JSON") from None
    return config_class.from_dict(cfg_dict, source=f"{path}: checkpoint config")


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


def _growth_of(meta: dict, cfg: GANConfig, path: Path) -> dict:
    try:
        growth = json.loads(meta.get("growth", "{}"))
        if not isinstance(growth, dict):
            raise ValueError
    except (ValueError, RecursionError):
        raise FacesynthError(f"{path}: checkpoint growth state is not a JSON object") from None
    if growth:
        res, alpha = growth.get("resolution"), growth.get("alpha", 1.0)
        if type(res) is not int or res not in cfg.block_resolutions:
            raise FacesynthError(f"{path}: checkpoint growth state names resolution {str(res)[:20]!r}, "
                                 f"not one of this {cfg.resolution}x{cfg.resolution} model's")
        if type(alpha) not in (int, float) or not 0 <= alpha <= 1:
            raise FacesynthError(f"{path}: checkpoint growth state has alpha {str(alpha)[:20]!r}, "
                                 "not a number from 0 to 1")
    return growth


def read_model(path: str | Path) -> tuple[GANConfig, dict[str, torch.Tensor], dict]:
    """Config, tensors and growth state ({} for a model trained at full resolution) of a model file."""
    from ..nets import build_discriminator, build_generator

    path = resolve_checkpoint(path)
    meta, shapes = safetensors_header(path)
    if meta.get("kind") != KIND:
        raise FacesynthError(f"{path}: not a facesynth GAN checkpoint (kind={meta.get('kind')!r})")
    cfg = config_from_metadata(meta, GANConfig, path)
    growth = _growth_of(meta, cfg, path)
    if gan_size_bound(cfg) > META_CHECK_BYTES:  # small networks are simply built and compared when loaded
        g = lambda: build_generator(cfg)  # noqa: E731
        check_tensor_shapes(path, shapes, {"G": g, "G_ema": g, "D": lambda: build_discriminator(cfg)})
    return cfg, read_safetensors(path), growth


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


def export_generator(path: str | Path, out: str | Path, half: bool = False) -> Path:
    """Write a checkpoint's G_ema alone (optionally as float16) as a small model file for inference.

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
    which = "G_ema" if any(k.startswith("G_ema.") for k in tensors) else "G"
    g = {f"G_ema.{k[len(which) + 1:]}": v for k, v in tensors.items() if k.startswith(which + ".")}
    if half:
        g = {k: v.half() if v.is_floating_point() else v for k, v in g.items()}
    out = Path(out)
    with atomic_path(out) as tmp:
        save_file({k: v.contiguous() for k, v in g.items()}, str(tmp), metadata=model_metadata(cfg, growth))
    return out
