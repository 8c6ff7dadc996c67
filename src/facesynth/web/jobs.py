"""Long work (projecting a photo, animating one) off the request path, in a bounded queue.

``workers`` jobs run at once; at most ``max_waiting`` more wait behind them, and beyond that a new job
is refused (the API answers 503 with the queue's length) instead of piling up work nobody will wait
for.  A job reports its progress as a fraction and a line of text; its files live in a folder of its
own, removed with it when it is older than ``ttl_s`` or more than ``keep`` jobs have finished since.
Job ids are random and unguessable: they are the only key to a visitor's photo and results.
"""

from __future__ import annotations

import logging
import secrets
import shutil
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import FacesynthError

log = logging.getLogger("facesynth.web")

QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "failed"


class QueueFull(Exception):
    """No room for another job; the message says how busy the server is."""


class Cancelled(Exception):
    """Raised inside a job's work when the server is stopping."""


@dataclass
class Job:
    id: str
    kind: str
    folder: Path
    state: str = QUEUED
    progress: float = 0.0
    message: str = "waiting for a free worker"
    error: str | None = None
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    result: dict = field(default_factory=dict)  # JSON-safe summary, shown to the client
    data: dict = field(default_factory=dict)  # what the server keeps for later requests (latents, file paths)
    cancelled: bool = False

    def report(self, fraction: float, message: str) -> None:
        """Progress from the work; also where a running job learns the server is stopping."""
        if self.cancelled:
            raise Cancelled("the server is stopping")
        self.progress = min(1.0, max(self.progress, float(fraction)))  # never runs backwards
        self.message = message

    @property
    def over(self) -> bool:
        return self.state in (DONE, FAILED)


class JobQueue:
    def __init__(self, root: Path, workers: int = 1, max_waiting: int = 4, keep: int = 64,
                 ttl_s: float = 3600.0):
        self.root, self.max_waiting, self.keep, self.ttl_s = Path(root), max_waiting, keep, ttl_s
        self.root.mkdir(parents=True, exist_ok=True)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="facesynth-job")
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()

    def submit(self, kind: str, work: Callable[[Job], dict], prepare: Callable[[Job], None] | None = None) -> Job:
        """Queue ``work(job)`` (it returns the job's result); ``prepare(job)`` runs first, synchronously,
        to put the inputs in the job's folder.  Raises QueueFull."""
        self.prune()
        with self._lock:
            waiting = sum(j.state == QUEUED for j in self._jobs.values())
            if waiting >= self.max_waiting:
                raise QueueFull(f"{waiting} jobs are already waiting; please try again in a minute")
            job = Job(secrets.token_urlsafe(12), kind, self.root / secrets.token_hex(8))
            self._jobs[job.id] = job
        job.folder.mkdir(parents=True)
        try:
            if prepare is not None:
                prepare(job)
        except BaseException:
            self._forget(job)
            raise
        self._pool.submit(self._run, job, work)
        return job

    def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def position(self, job: Job) -> int:
        """How many queued jobs are ahead of this one (0 when it is next, or running)."""
        if job.state != QUEUED:
            return 0
        return sum(j.state == QUEUED and j.created < job.created for j in list(self._jobs.values()))

    def counts(self) -> dict:
        jobs = list(self._jobs.values())
        return {s: sum(j.state == s for j in jobs) for s in (QUEUED, RUNNING, DONE, FAILED)}

    def prune(self) -> None:
        """Forget finished jobs past their time, and the oldest beyond ``keep``."""
        now = time.time()
        with self._lock:
            done = sorted((j for j in self._jobs.values() if j.over), key=lambda j: j.finished or 0)
        stale = [j for j in done if now - (j.finished or now) > self.ttl_s]
        stale += [j for j in done[:max(0, len(done) - self.keep)] if j not in stale]
        for job in stale:
            self._forget(job)

    def shutdown(self) -> None:
        """Queued jobs never start; running ones stop at their next progress report."""
        for job in list(self._jobs.values()):
            job.cancelled = True
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _forget(self, job: Job) -> None:
        with self._lock:
            self._jobs.pop(job.id, None)
        shutil.rmtree(job.folder, ignore_errors=True)

    def _run(self, job: Job, work: Callable[[Job], dict]) -> None:
        job.state, job.started, job.message = RUNNING, time.time(), "starting"
        try:
            job.result = work(job) or {}
            job.state, job.progress, job.message = DONE, 1.0, "done"
        except (FacesynthError, Cancelled) as e:
            job.state, job.error, job.message = FAILED, str(e), "failed"
        except Exception as e:  # noqa: BLE001 - the worker thread must survive any job
            log.exception("job %s (%s) failed", job.id, job.kind)
            job.state, job.error, job.message = FAILED, f"internal error: {type(e).__name__}: {e}", "failed"
        finally:
            job.finished = time.time()
