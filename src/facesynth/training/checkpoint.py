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

import json
import os
import shutil
import struct
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from ..errors import FacesynthError
from ..presets import GANConfig
from ..util.atomic import atomic_path, dir_mode, file_mode, write_json_atomic

KIND = "facesynth-gan"
FORMAT_VERSION = 1
MODEL_FILE = "model.safetensors"
TRAINING_FILE = "training.safetensors"
SNAPSHOT_PREFIX = "snapshot-"
LATEST = "latest.json"
HISTORY_DIR = "history"
MAX_HEADER_BYTES = 100 * 2**20


# --------------------------------------------------------------------------- tensors <-> modules

def module_tensors(prefix: str, module: nn.Module) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{k}": v.detach().cpu().contiguous() for k, v in module.state_dict().items()}


def load_module_tensors(module: nn.Module, tensors: dict[str, torch.Tensor], prefix: str, source: str) -> None:
    own = module.state_dict()
    sub = {k[len(prefix) + 1:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}
    missing = sorted(set(own) - set(sub))
    unexpected = sorted(set(sub) - set(own))
    if missing or unexpected:
        raise FacesynthError(f"{source}: weights for {prefix} do not match its config "
                             f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    for k, v in sub.items():
        if v.shape != own[k].shape:
            raise FacesynthError(f"{source}: {prefix}.{k} has shape {list(v.shape)}, "
                                 f"its config expects {list(own[k].shape)}")
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
    for group in opt.param_groups:
        for p in group["params"]:
            name = names[id(p)]
            st = {}
            for k in ("step", "exp_avg", "exp_avg_sq"):
                key = f"{prefix}.{name}.{k}"
                if key in tensors:
                    v = tensors[key]
                    st[k] = v.to(p.device) if k != "step" else v.clone()
            if st:
                opt.state[p] = st


# --------------------------------------------------------------------------- reading safely

def check_safetensors(path: Path) -> dict:
    """Validate the header of a safetensors file before handing it to the loader; returns its metadata."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise FacesynthError(f"{path}: not a safetensors file (too short)")
            (n,) = struct.unpack("<Q", head)
            if n <= 1 or n > MAX_HEADER_BYTES or n + 8 > size:
                raise FacesynthError(f"{path}: not a safetensors file (bad header length; a pickle or a damaged file?)")
            header = json.loads(f.read(n))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        if isinstance(e, FacesynthError):
            raise
        raise FacesynthError(f"{path}: not a safetensors file ({type(e).__name__})") from None
    if not isinstance(header, dict):
        raise FacesynthError(f"{path}: not a safetensors file (header is not an object)")
    return header.get("__metadata__") or {}


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    check_safetensors(path)
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise FacesynthError(f"{path}: damaged safetensors file ({e})") from None


def read_json(path: Path, what: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            obj = json.load(f)
    except FileNotFoundError:
        raise FacesynthError(f"{path}: missing {what}") from None
    except (OSError, ValueError) as e:
        raise FacesynthError(f"{path}: unreadable {what} ({e})") from None
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
    tmp = Path(tempfile.mkdtemp(prefix=".snapshot-", suffix=".tmp", dir=run_dir))
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
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise FacesynthError(f"{run_dir}: could not write snapshot ({e.strerror or e}); "
                             "earlier snapshots are intact") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    write_json_atomic(run_dir / LATEST, {"snapshot": final.name, "images_seen": int(state["images_seen"])})
    _prune(run_dir, keep, protect=final.name)
    return final


def save_generator_history(run_dir: Path, cfg: GANConfig, G_ema: nn.Module, images_seen: int) -> Path:
    """G_ema alone as history/G_ema-NNNNNNNNN.safetensors: small, loadable by generate and metrics,
    and kept after the full snapshot it came with has been pruned."""

    path = Path(run_dir) / HISTORY_DIR / f"G_ema-{images_seen:09d}.safetensors"
    with atomic_path(path) as tmp:
        save_file(module_tensors("G_ema", G_ema), str(tmp), metadata=model_metadata(cfg, growth_of(G_ema)))
    return path


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


def _prune(run_dir: Path, keep: int, protect: str) -> None:
    if keep <= 0:
        return
    snaps = list_snapshots(run_dir)
    for old in snaps[:-keep]:
        if old.name != protect:
            shutil.rmtree(old, ignore_errors=True)


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
        if path.suffix in (".pkl", ".pt", ".pth", ".ckpt", ".bin"):
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
    except ValueError:
        raise FacesynthError(f"{path}: checkpoint config is not valid JSON") from None
    return config_class.from_dict(cfg_dict, source=str(path))


def read_model(path: str | Path) -> tuple[GANConfig, dict[str, torch.Tensor], dict]:
    """Config, tensors and growth state ({} for a model trained at full resolution) of a model file."""
    path = resolve_checkpoint(path)
    meta = check_safetensors(path)
    if meta.get("kind") != KIND:
        raise FacesynthError(f"{path}: not a facesynth GAN checkpoint (kind={meta.get('kind')!r})")
    cfg = config_from_metadata(meta, GANConfig, path)
    try:
        growth = json.loads(meta.get("growth", "{}"))
        if not isinstance(growth, dict):
            raise ValueError
    except ValueError:
        raise FacesynthError(f"{path}: checkpoint growth state is not a JSON object") from None
    return cfg, read_safetensors(path), growth


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
    """Write a checkpoint's G_ema alone (optionally as float16) as a small model file for inference."""
    cfg, tensors, growth = read_model(path)
    which = "G_ema" if any(k.startswith("G_ema.") for k in tensors) else "G"
    g = {f"G_ema.{k[len(which) + 1:]}": v for k, v in tensors.items() if k.startswith(which + ".")}
    if half:
        g = {k: v.half() if v.is_floating_point() else v for k, v in g.items()}
    out = Path(out)
    with atomic_path(out) as tmp:
        save_file({k: v.contiguous() for k, v in g.items()}, str(tmp), metadata=model_metadata(cfg, growth))
    return out
