"""Where a model file is: a run folder (its latest snapshot), a snapshot folder, or the file itself.

Every reader takes any of the three; a pickled file is refused by its name before it is opened.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import FacesynthError

MODEL_FILE = "model.safetensors"
SNAPSHOT_PREFIX = "snapshot-"
LATEST = "latest.json"
PICKLE_SUFFIXES = (".pkl", ".pickle", ".pt", ".pth", ".ckpt", ".bin", ".tar")


def read_json(path: Path, what: str) -> dict:
    """A small JSON object a run keeps beside its weights (latest.json, state.json), or one clear error."""
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


def list_snapshots(run_dir: Path) -> list[Path]:
    """A run folder's complete snapshot folders (weights and state written), oldest first."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    snaps = [p for p in run_dir.iterdir() if p.is_dir() and p.name.startswith(SNAPSHOT_PREFIX)
             and (p / MODEL_FILE).is_file() and (p / "state.json").is_file()]
    return sorted(snaps, key=lambda p: p.name)


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
