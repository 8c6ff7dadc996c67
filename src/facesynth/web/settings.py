"""What a server runs with: the models, and the limits that keep one busy visitor from starving the rest."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import FacesynthError
from .params import SIZE_MAX

CKPT_ENV = "FACESYNTH_CKPT"
ANIMATE_CKPT_ENV = "FACESYNTH_ANIMATE_CKPT"


@dataclass
class ServerSettings:
    ckpt: str | None = None  # face generator; None: $FACESYNTH_CKPT, else the bundled model
    animate_ckpt: str | None = None  # talking-head run or person; None: $FACESYNTH_ANIMATE_CKPT, else the bundled one
    device: str = "auto"
    threads: int | None = None  # torch CPU threads (None: torch's default)
    # Batching: requests arriving within batch_window_ms of the first are drawn in one pass of up to max_batch.
    # On a CPU a face costs ~2.5x less at batch 8-16 than alone, and no less at 64 (benchmarks/results/
    # generate_speed.md), where a batch only makes every request in it wait longer: 16 (web_load.md).
    max_batch: int = 16
    batch_window_ms: float = 5.0
    max_pending_faces: int = 2048  # faces waiting to be drawn before requests get 503
    # The most pixels one image may have (a face's size, a strip's frames x size): scaling and encoding grow
    # with it, off the drawing thread but on the same cores.  Default: one face at the largest size.
    max_image_pixels: int = SIZE_MAX * SIZE_MAX
    cache_mb: float = 64.0  # PNGs kept for repeated requests (shared links, the slider going back and forth)
    # Uploads and jobs.
    max_photo_mb: float = 10.0
    max_video_mb: float = 25.0
    job_workers: int = 1  # jobs running at once (each uses every core it can get)
    max_waiting_jobs: int = 4  # jobs queued behind them before new ones get 503
    project_steps: int = 150
    max_project_steps: int = 500
    max_driver_frames: int = 250  # a driving clip is cut after this many frames (10 s at 25 fps)
    job_timeout_s: float = 900.0
    keep_jobs: int = 64  # finished jobs (and their files) kept for downloading ...
    job_ttl_s: float = 3600.0  # ... for at most this long
    work_dir: str | None = None  # where job files go (None: a temporary folder removed at shutdown)

    @property
    def max_body_bytes(self) -> int:
        """The largest request accepted at all: a photo and a driving clip, plus room for the form's framing."""
        return int((self.max_photo_mb + self.max_video_mb + 1) * 2**20)

    def generator_path(self) -> str:
        from ..models import default_model

        path = self.ckpt or os.environ.get(CKPT_ENV) or default_model()
        if not path:
            raise FacesynthError(f"no checkpoint: pass --ckpt PATH or set {CKPT_ENV} (this installation has no "
                                 "bundled model)")
        return str(path)

    def talking_head_path(self) -> str | None:
        from ..models import default_talking_model

        path = self.animate_ckpt or os.environ.get(ANIMATE_CKPT_ENV) or default_talking_model()
        if path and not Path(path).exists():
            raise FacesynthError(f"{path}: talking-head checkpoint not found (--animate-ckpt / ${ANIMATE_CKPT_ENV})")
        return str(path) if path else None
