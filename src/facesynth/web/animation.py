"""The animation job: a photo made to move as a driving clip does (``animate.reenact``), run as a child
process (``animate_worker``) whose progress bars are read as the job's progress."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

from ..errors import FacesynthError
from .jobs import Job

# The two bars reenact shows: tracking the driver's landmarks, then rendering.  Tracking (dlib, per frame)
# is the slower part on a CPU, so it gets the larger share of the job's progress.
STAGES = (("landmarks", "tracking the face in the driving clip", 0.0, 0.6),
          ("reenact", "rendering the talking head", 0.6, 1.0))
BAR = re.compile(r"^(?P<desc>.*?):?\s+\d+%\|.*?\|\s*(?P<done>\d+)/(?P<total>\d+)")

_children: set[subprocess.Popen] = set()  # killed when the server stops


def parse_progress(segment: str) -> tuple[float, str] | None:
    """One tqdm update -> (fraction of the whole job, what is happening), or None for other output."""
    m = BAR.match(segment.strip())
    if not m:
        return None
    done, total = int(m.group("done")), max(1, int(m.group("total")))
    for key, label, lo, hi in STAGES:
        if m.group("desc").endswith(key):
            return lo + (hi - lo) * min(1.0, done / total), f"{label}: frame {done} of {total}"
    return None


def _segments(stream):
    """Text pieces split at carriage returns and newlines, as tqdm writes them, while the process runs."""
    buf = b""
    for chunk in iter(lambda: stream.read1(4096), b""):
        buf += chunk
        *parts, buf = re.split(rb"[\r\n]", buf)
        yield from (p.decode(errors="replace") for p in parts if p.strip())
    if buf.strip():
        yield buf.decode(errors="replace")


def animate(job: Job, ckpt: str, photo: Path, driver: Path, max_frames: int, device: str,
            timeout_s: float) -> dict:
    """Runs in a job thread: the child process, its progress into ``job``, its report back."""
    out = job.folder / "animation.mp4"
    args = {"ckpt": ckpt, "photo": str(photo), "driver": str(driver), "out": str(out),
            "max_frames": max_frames, "device": device}
    job.report(0.0, "loading the talking-head model")
    proc = subprocess.Popen([sys.executable, "-m", "facesynth.web.animate_worker", json.dumps(args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=os.environ.copy())
    _children.add(proc)
    timer = threading.Timer(timeout_s, proc.kill)
    timer.start()
    last_line = ""
    try:
        for seg in _segments(proc.stderr):
            step = parse_progress(seg)
            if step:
                job.report(*step)
            else:
                last_line = seg.strip()
        answer = proc.stdout.read().decode(errors="replace").strip().splitlines()
        code = proc.wait()
    finally:
        timer.cancel()
        if proc.poll() is None:  # the job was cancelled mid-way: the child goes with it
            proc.kill()
            proc.wait()
        _children.discard(proc)
    if code < 0:
        raise FacesynthError(f"the animation was stopped after {timeout_s:.0f} s")
    try:
        report = json.loads(answer[-1]) if answer else {}
    except json.JSONDecodeError:
        report = {}
    def public(text: str) -> str:  # messages name the visitor's files, not our paths
        return text.replace(str(photo), "your photo").replace(str(driver), "the driving clip")

    if "error" in report:
        raise FacesynthError(public(report["error"]))
    if code != 0 or not out.is_file():
        raise FacesynthError(public(f"the animation failed: {last_line or f'exit code {code}'}"))
    job.data["video"] = out
    return {"frames": report.get("frames"), "fps": report.get("fps_video"), "resolution": report.get("resolution"),
            "missing_driver_frames": len(report.get("missing_driver_frames") or []),
            "seconds": round(float(report.get("tracking_s", 0)) + float(report.get("render_s", 0)), 1)}


def stop_children() -> None:
    for proc in list(_children):
        proc.kill()


DRIVERS = Path(__file__).with_name("drivers")


def bundled_drivers() -> dict[str, Path]:
    """The driving clips that ship with facesynth, by name (see drivers/README.md for where they come from)."""
    return {p.stem: p for p in sorted(DRIVERS.glob("*.mp4"))}
