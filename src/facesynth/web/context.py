"""Everything one server holds: the model (loaded once), the batcher, the PNG cache, the job queue, and
one thread for face detection (dlib's landmark model is 100 MB per thread that uses it)."""

from __future__ import annotations

import asyncio
import importlib.util
import shutil
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from starlette.concurrency import run_in_threadpool

from ..errors import FacesynthError
from .animation import bundled_drivers, stop_children
from .batcher import Batcher
from .faces import FaceModel
from .jobs import DONE, Job, JobQueue
from .params import PHOTO_PREFIX
from .png import PngCache
from .projection import Projector
from .settings import ANIMATE_CKPT_ENV, ServerSettings


LARGE_PIXELS = 512 * 512  # above the page's largest image (the 512-px download)


class NotFound(FacesynthError):
    """A face or job the request names does not exist (any more)."""


class ServerContext:
    def __init__(self, settings: ServerSettings):
        from ..util.device import pick_device

        self.settings = s = settings
        if s.threads:
            torch.set_num_threads(s.threads)
        self.device = pick_device(s.device)
        self.model = FaceModel(s.generator_path(), self.device)
        from ..provenance import for_model

        self.mark = for_model(s.generator_path())  # what every picture served states (None: --no-mark)
        self.animate_ckpt = s.talking_head_path()
        self.drivers = bundled_drivers()
        self.cache = PngCache(int(s.cache_mb * 2**20))
        self.batcher = Batcher(self.model.G, s.max_batch, s.batch_window_ms / 1000, s.max_pending_faces)
        self._tmp = None if s.work_dir else tempfile.mkdtemp(prefix="facesynth-web-")
        self.jobs = JobQueue(Path(s.work_dir or self._tmp), s.job_workers, s.max_waiting_jobs, s.keep_jobs,
                             s.job_ttl_s)
        self.projector = Projector(self.model, self.mark)
        self.faces_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="facesynth-faces")
        self.large_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="facesynth-large-png")

    def start(self) -> None:
        self.batcher.start()

    def stop(self) -> None:
        self.batcher.stop()
        self.jobs.shutdown()
        stop_children()
        self.faces_pool.shutdown(wait=False, cancel_futures=True)
        self.large_pool.shutdown(wait=False, cancel_futures=True)
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)

    async def off_loop(self, fn: Callable):
        """Runs ``fn()`` on the face-detection thread (uploads' checks), without blocking the event loop."""
        return await asyncio.wrap_future(self.faces_pool.submit(fn))

    async def encode(self, fn: Callable[[], bytes], pixels: int) -> bytes:
        """Runs ``fn()`` (scaling and PNG encoding) off the event loop.  Images over LARGE_PIXELS take one
        lane, one at a time, so a few large ones at once leave the other cores to the faces being drawn."""
        if pixels > LARGE_PIXELS:
            return await asyncio.wrap_future(self.large_pool.submit(fn))
        return await run_in_threadpool(fn)

    # ----------------------------------------------------------------- names in requests

    def face(self, ref: int | str):
        """A face as the API's validation left it (params.parse_face): a seed stays a seed; 'photo:<job id>'
        -> that projected photo's latent."""
        if isinstance(ref, int):
            return ref
        job = self.job(ref.removeprefix(PHOTO_PREFIX))
        if job.kind != "project":
            raise NotFound(f"{ref}: that job animated a photo; only projected photos can be mixed")
        if job.state != DONE:
            raise FacesynthError(f"{ref}: the photo is not projected yet ({job.state})")
        return job.data["ws"]

    @property
    def work_folder(self) -> Path:
        return Path(self.settings.work_dir or self._tmp)

    def job(self, job_id: str) -> Job:
        job = self.jobs.get(job_id)
        if job is None:
            raise NotFound(f"no job {job_id!r} (finished jobs are kept for "
                           f"{self.settings.job_ttl_s / 60:.0f} minutes)")
        return job

    # ----------------------------------------------------------------- what the server can do

    def features(self) -> dict[str, dict]:
        photos = _photo_support()
        if self.animate_ckpt is None:
            animate = (f"Animation is off: no talking-head model is loaded. Start the server with "
                       f"`facesynth serve --animate-ckpt PATH` (a run from `facesynth animate train` or a person "
                       f"from `facesynth animate finetune`), or set `${ANIMATE_CKPT_ENV}`.")
        else:
            animate = photos or _video_support()
        return {"project": {"available": photos is None, "reason": photos},
                "animate": {"available": animate is None, "reason": animate}}


def _photo_support() -> str | None:
    """Why photos cannot be used here (dlib or its landmark model missing), or None."""
    if importlib.util.find_spec("dlib") is None:
        return "Photo features need dlib: pip install 'facesynth[align]'."
    from ..data.align import landmark_model_path

    try:
        landmark_model_path()
    except FacesynthError as e:
        return str(e)
    return None


def _video_support() -> str | None:
    if importlib.util.find_spec("imageio_ffmpeg") is None:
        return "Animation needs imageio-ffmpeg: pip install 'facesynth[video]'."
    return None
