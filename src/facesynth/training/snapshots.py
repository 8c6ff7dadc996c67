"""Run folders: snapshots written, pruned, resumed from, and the history of every snapshot's generator.

A snapshot is a folder ``snapshot-NNNNNNNN/`` (NNNNNNNN = images seen) holding
  model.safetensors     G, D and G_ema weights and buffers; the config in its metadata (checkpoints/)
  training.safetensors  optimizer moments and RNG states
  config.json           the GANConfig that rebuilds the networks
  state.json            progress counters (images seen, steps, ...)
It is written under a temporary name and renamed when complete, then
``latest.json`` in the run folder is atomically pointed at it.  Only the last
few snapshots are kept; ``history/`` keeps every snapshot's G_ema alone.  Nothing is ever unpickled.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import torch
from torch import nn

from ..checkpoints import (FORMAT_VERSION, KIND, LATEST, MODEL_FILE, SNAPSHOT_PREFIX, check_safetensors, list_snapshots,
                           model_metadata, module_tensors, read_safetensors, resolve_checkpoint, save_file)
from ..config import GANConfig
from ..errors import FacesynthError
from ..util.atomic import atomic_path, dir_mode, file_mode, write_bytes_atomic, write_error, write_json_atomic

TRAINING_FILE = "training.safetensors"
METRICS_LOG = "metrics.jsonl"
HISTORY_DIR = "history"


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


def snapshot_name(images_seen: int) -> str:
    return f"{SNAPSHOT_PREFIX}{images_seen:09d}"


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
