"""Atomic file output: write next to the target, fsync, then rename over it.

A crash or a full disk leaves either the old file or the new one, never a torn mix.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ..errors import FacesynthError

_WRITE_PROBLEMS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file too large for this file system",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
}


def write_error(path: str | os.PathLike, e: OSError, previous: bool = False) -> FacesynthError:
    """One clear line for a failed write: 'no space left on device writing X', 'X: ... is read-only'."""
    path = Path(path)
    if e.errno == errno.EROFS:
        msg = f"{path} is read-only (its file system is mounted read-only)"
    elif e.errno in (errno.EACCES, errno.EPERM):
        msg = f"{path} is read-only for this user (permission denied)"
    elif e.errno in _WRITE_PROBLEMS:
        msg = f"{_WRITE_PROBLEMS[e.errno]} writing {path}"
    else:  # some writers (ffmpeg's pipe) put whole logs into the message: keep its first line
        reason = (e.strerror or str(e) or type(e).__name__).strip().splitlines()[0]
        msg = f"{path}: write failed ({reason})" if previous else f"{path}: cannot write here ({reason})"
    if previous and path.exists():
        msg += "; the previous file is untouched"
    return FacesynthError(msg)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a temporary path in the target's folder; renames it onto ``path`` if the block succeeds."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        os.chmod(tmp, file_mode())  # mkstemp makes 0600; give the file normal permissions
    except OSError as e:
        raise write_error(path, e) from None
    tmp = Path(tmp)
    try:
        yield tmp
        os.chmod(tmp, file_mode())  # again: some writers (safetensors) recreate the file as 0600
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        _remove(tmp)
        raise write_error(path, e, previous=True) from None
    except BaseException:
        _remove(tmp)
        raise


def _remove(tmp: Path) -> None:
    """Drop a temporary file; a folder that turned read-only must not hide the original error."""
    with contextlib.suppress(OSError):
        tmp.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """Permissions a plain open() would give a new file (temp-file helpers make 0600)."""
    return 0o666 & ~_umask()


def dir_mode() -> int:
    return 0o777 & ~_umask()


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def append_json_line(path: str | os.PathLike, record: dict) -> None:
    """Append one JSON line to a log; a full disk or read-only folder is one clear error naming the log.

    (A line torn by a crash is dropped when the run resumes: training.snapshots.rewind_log.)
    """
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
    except OSError as e:
        raise write_error(path, e) from None


def write_json_atomic(path: str | os.PathLike, obj) -> None:
    write_bytes_atomic(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def check_writable_dir(path: str | os.PathLike) -> Path:
    """Create ``path`` if needed and make sure files can be written in it, before any long work starts."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as e:
        raise write_error(path, e) from None
    return path
