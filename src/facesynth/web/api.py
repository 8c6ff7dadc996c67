"""The JSON API under /api: faces as PNG, jobs for uploads.  Handlers only check input and hand work on."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile
from fastapi.responses import FileResponse, Response
from PIL import Image
from pydantic import AfterValidator
from starlette.concurrency import run_in_threadpool

from ..errors import FacesynthError
from ..synthesis.styles import parse_style_layers
from ..util.grid import save_png
from .animation import animate
from .context import NotFound, ServerContext
from .jobs import DONE, Job, QueueFull
from .params import (DEFAULT_FRAMES, DEFAULT_PSI, FRAMES_MAX, FRAMES_MIN, PSI_MAX, PSI_MIN, SEED_MAX, SEED_MIN,
                     SIZE_MAX, SIZE_MIN, check_seed, parse_face, ranges)
from .png import encode_png, marked_png
from .schemas import DetectOut, Info, JobOut, Problem
from .uploads import UploadError, aligned_face, check_portrait, check_size, decode_photo, save_photo, save_video


def context(request: Request) -> ServerContext:
    return request.app.state.ctx


Ctx = Annotated[ServerContext, Depends(context)]
# Seeds are checked by params.check_seed / parse_face rather than by ge/le, so every seed error reads the same.
Seed = Annotated[int, Query(description=f"the face: the same seed draws the same face ({SEED_MIN} to {SEED_MAX})",
                            json_schema_extra={"minimum": SEED_MIN, "maximum": SEED_MAX}), AfterValidator(check_seed)]
# Validated as a string (its length), then parsed: handlers get an int seed or the 'photo:<job id>' string.
FaceRef = Annotated[str, Query(description=f"a seed ({SEED_MIN} to {SEED_MAX}), or photo:JOB_ID for a photo "
                               "projected by /api/jobs/project", max_length=64), AfterValidator(parse_face)]
Psi = Annotated[float, Query(ge=PSI_MIN, le=PSI_MAX, allow_inf_nan=False,
                             description="truncation ψ: 1 = none, 0 = the average face; lower is more typical, "
                             "higher more varied")]
Size = Annotated[int | None, Query(ge=SIZE_MIN, le=SIZE_MAX, description="height in pixels (of one frame in a "
                                   "strip; Lanczos); default: the model's")]

PNG = {200: {"content": {"image/png": {}}, "description": "a PNG image"}}
ERRORS = {code: {"model": Problem} for code in (404, 413, 415, 422, 503)}

router = APIRouter(prefix="/api", responses={422: {"model": Problem}})


def _check_pixels(ctx: ServerContext, count: int, columns: int, size: int | None) -> int:
    """Refuses, before anything is drawn, an image larger than the server's budget: the Lanczos scaling and
    PNG encoding grow with the pixels answered, and a 16-frame strip at 1024 px took seconds of both cores."""
    side = size or ctx.model.resolution  # the generator's images are square
    cells = columns * -(-count // columns)
    pixels, budget = cells * side * side, ctx.settings.max_image_pixels
    if pixels > budget:
        what = f"{count} frames of {side}x{side} pixels" if count > 1 else f"a {side}x{side} image"
        raise FacesynthError(f"{what} would be {pixels / 1e6:.1f} megapixels; this server answers at most "
                             f"{budget / 1e6:.1f} per image: ask for a smaller size or fewer frames")
    return pixels


async def _png(ctx: ServerContext, key: tuple, make_ws, count: int, size: int | None, columns: int = 1,
               params: dict | None = None):
    """A PNG from the cache, else drawn by the batcher (with other requests), tiled ``columns`` frames to a
    row, marked (watermark and Content Credentials stating ``params``), and cached."""
    pixels = _check_pixels(ctx, count, columns, size)
    data = ctx.cache.get(key)
    if data is None:
        frames = await ctx.batcher.render(make_ws, count)
        mark = ctx.mark and ctx.mark.with_params(**(params or {}))
        data = await ctx.encode(lambda: marked_png(frames, columns, size, mark, f"{key[0]}.png"), pixels)
        ctx.cache.put(key, data)
    return Response(data, media_type="image/png", headers={"Cache-Control": "public, max-age=3600"})


@router.get("/info", response_model=Info, summary="the model, defaults, limits and what this server can do")
def info(ctx: Ctx):
    s = ctx.settings
    return {"model": ctx.model.describe(),
            "defaults": {"psi": DEFAULT_PSI, "project_steps": s.project_steps, "interpolation_frames": DEFAULT_FRAMES},
            "ranges": ranges(),
            "limits": {"max_photo_mb": s.max_photo_mb, "max_video_mb": s.max_video_mb,
                       "max_project_steps": s.max_project_steps, "max_driver_frames": s.max_driver_frames,
                       "max_waiting_jobs": s.max_waiting_jobs, "max_batch": s.max_batch,
                       "max_image_pixels": s.max_image_pixels},
            "features": ctx.features(),
            "drivers": [{"name": n, "url": f"/api/drivers/{n}"} for n in ctx.drivers]}


@router.get("/stats", summary="batching, cache and job counters")
def stats(ctx: Ctx):
    return {"batcher": ctx.batcher.stats.as_dict(), "cache": ctx.cache.stats(), "jobs": ctx.jobs.counts()}


@router.get("/face", responses={**PNG, 503: {"model": Problem}}, response_class=Response,
            summary="one face, drawn from its seed")
async def face(ctx: Ctx, seed: Seed, psi: Psi = DEFAULT_PSI, size: Size = None):
    return await _png(ctx, ("face", seed, psi, size), ctx.model.face_ws(seed, psi), 1, size,
                      params={"seed": seed, "psi": psi})


@router.get("/mix", responses={**PNG, **ERRORS}, response_class=Response,
            summary="style mixing: the source face with some layers' styles from the style face")
async def mix(ctx: Ctx, source: FaceRef, style: FaceRef, psi: Psi = DEFAULT_PSI, size: Size = None,
              styles: Annotated[str, Query(max_length=64, description="coarse (pose, face shape, hair), middle "
                                           "(features, eyes), fine (colours), joined with +, or layer indices "
                                           "like 0-3")] = "coarse"):
    layers = parse_style_layers(ctx.model.G, styles)
    make = ctx.model.mix_ws(ctx.face(source), ctx.face(style), layers, psi)
    return await _png(ctx, ("mix", source, style, tuple(layers), psi, size), make, 1, size,
                      params={"source": source, "style": style, "layers": layers, "psi": psi})


@router.get("/interpolate", responses={**PNG, **ERRORS}, response_class=Response,
            summary="frames morphing face a into face b, in one row or wrapped to several")
async def interpolate(ctx: Ctx, a: FaceRef, b: FaceRef, psi: Psi = DEFAULT_PSI, size: Size = None,
                      frames: Annotated[int, Query(ge=FRAMES_MIN, le=FRAMES_MAX)] = DEFAULT_FRAMES,
                      space: Annotated[Literal["w", "z"], Query(description="lerp in w, or slerp in z "
                                                                "(seeds only)")] = "w",
                      columns: Annotated[int | None, Query(ge=1, le=FRAMES_MAX, description="frames per row "
                                                           "(default: all in one); the rest wrap to more rows, "
                                                           "as a narrow screen asks")] = None):
    fa, fb = ctx.face(a), ctx.face(b)
    if space == "z" and not (isinstance(fa, int) and isinstance(fb, int)):
        raise FacesynthError("interpolating in z needs two seeds: a projected photo has only a w")
    make = ctx.model.strip_ws(fa, fb, frames, psi, space)
    columns = min(columns or frames, frames)
    return await _png(ctx, ("strip", a, b, frames, space, psi, size, columns), make, frames, size, columns,
                      params={"a": a, "b": b, "frames": frames, "space": space, "psi": psi})


@router.get("/drivers/{name}", response_class=FileResponse, responses={404: {"model": Problem}},
            summary="a driving clip that ships with facesynth (mp4)")
def driver_clip(ctx: Ctx, name: str):
    if name not in ctx.drivers:
        raise NotFound(f"no driving clip {name!r} (there are: {', '.join(ctx.drivers) or 'none'})")
    return FileResponse(ctx.drivers[name], media_type="video/mp4")


# --------------------------------------------------------------------------- jobs

def _job_out(ctx: ServerContext, job: Job) -> dict:
    done = job.state == DONE
    return {"id": job.id, "kind": job.kind, "state": job.state, "progress": round(job.progress, 4),
            "message": job.message, "queue_position": ctx.jobs.position(job), "error": job.error,
            "result": job.result, "result_url": f"/api/jobs/{job.id}/result" if done else None,
            "input_url": f"/api/jobs/{job.id}/input" if job.kind == "project" else None,
            "elapsed_s": round((job.finished or time.time()) - (job.started or job.created), 2)}


def _name(upload: UploadFile, fallback: str) -> str:
    """The file's own name for messages (never a path of ours)."""
    return Path(upload.filename or "").name[:80] or fallback


async def _read(upload: UploadFile, limit_mb: float, what: str) -> bytes:
    limit = int(limit_mb * 2**20)
    return check_size(await upload.read(limit + 1), limit, what)


def _check_room(ctx: ServerContext) -> None:
    """Refuse before the (costly) face check when the queue is already full."""
    if ctx.jobs.counts()["queued"] >= ctx.settings.max_waiting_jobs:
        raise QueueFull(f"{ctx.settings.max_waiting_jobs} jobs are already waiting; please try again in a minute")


@router.post("/jobs/project", status_code=202, response_model=JobOut, responses=ERRORS,
             summary="upload a photo: align its face and project it into the latent space (a background job)")
async def start_projection(ctx: Ctx, photo: Annotated[UploadFile, File(description="a photo with a face")],
                           steps: Annotated[int | None, Form(ge=1, description="optimisation steps; at most "
                                                             "limits.max_project_steps of /api/info")] = None):
    s = ctx.settings
    steps = steps or s.project_steps
    if steps > s.max_project_steps:
        raise UploadError(422, f"steps: at most {s.max_project_steps} on this server")
    _check_room(ctx)
    what = _name(photo, "the photo")
    data = await _read(photo, s.max_photo_mb, what)
    model = ctx.model
    aligned = await ctx.off_loop(lambda: aligned_face(decode_photo(data, what), model.resolution, what, model.framing))
    job = ctx.jobs.submit("project", ctx.projector.work(aligned, steps),
                          prepare=lambda job: save_png(aligned, job.folder / "input.png"))
    return _job_out(ctx, job)


@router.post("/jobs/animate", status_code=202, response_model=JobOut, responses=ERRORS,
             summary="upload a photo and animate it with a bundled or uploaded driving clip (a background job)")
async def start_animation(ctx: Ctx, photo: Annotated[UploadFile, File(description="a portrait")],
                          driver: Annotated[str | None, Form(description="a bundled clip's name")] = None,
                          driver_video: Annotated[UploadFile | None, File(description="your own clip")] = None):
    s = ctx.settings
    if ctx.animate_ckpt is None:
        raise UploadError(503, ctx.features()["animate"]["reason"])
    if driver_video is None and driver not in ctx.drivers:
        raise NotFound(f"choose a driving clip ({', '.join(ctx.drivers) or 'none bundled'}) or upload one")
    _check_room(ctx)
    what = _name(photo, "the photo")
    data = await _read(photo, s.max_photo_mb, what)
    clip = await _read(driver_video, s.max_video_mb, _name(driver_video, "the driving clip")) if driver_video else None
    portrait = await ctx.off_loop(lambda: _checked_portrait(data, what))

    def prepare(job: Job) -> None:
        save_photo(portrait, job.folder / "photo.png")
        if clip is not None:
            save_video(clip, job.folder / "driver.mp4", _name(driver_video, "the driving clip"))

    clip_path = None if clip is not None else ctx.drivers[driver]

    def work(job: Job) -> dict:
        return animate(job, ctx.animate_ckpt, job.folder / "photo.png", clip_path or job.folder / "driver.mp4",
                       s.max_driver_frames, str(ctx.device), s.job_timeout_s)

    # Probing an uploaded clip runs ffmpeg: done off the event loop, like the face check.
    job = await ctx.off_loop(lambda: ctx.jobs.submit("animate", work, prepare=prepare))
    return _job_out(ctx, job)


def _checked_portrait(data: bytes, what: str):
    img = decode_photo(data, what)
    check_portrait(img, what)
    return img


@router.get("/jobs/{job_id}", response_model=JobOut, responses={404: {"model": Problem}},
            summary="a job's state and progress")
def job_status(ctx: Ctx, job_id: str):
    return _job_out(ctx, ctx.job(job_id))


@router.get("/jobs/{job_id}/result", responses={200: {"content": {"image/png": {}, "video/mp4": {}}},
                                                404: {"model": Problem}, 409: {"model": Problem}},
            response_class=Response, summary="a finished job's result: the projected face (PNG) or the video (mp4)")
def job_result(ctx: Ctx, job_id: str, size: Size = None, download: bool = False):
    job = ctx.job(job_id)
    if job.state != DONE:
        raise UploadError(409, f"job {job_id} is {job.state}" + (f": {job.error}" if job.error else ""))
    if job.kind == "animate":
        return FileResponse(job.data["video"], media_type="video/mp4",
                            filename="facesynth-talking-head.mp4" if download else None)
    return _file_png(job.folder / "reconstruction.png", size, ctx.mark and ctx.mark.with_params(job=job_id))


@router.get("/jobs/{job_id}/input", response_class=Response, responses={**PNG, 404: {"model": Problem}},
            summary="the aligned face a projection job aims at")
def job_input(ctx: Ctx, job_id: str, size: Size = None):
    job = ctx.job(job_id)
    if job.kind != "project":
        raise NotFound(f"job {job_id} has no aligned input")
    return _file_png(job.folder / "input.png", size)


def _file_png(path: Path, size: int | None, mark=None) -> Response:
    with Image.open(path) as im:
        pixels = np.asarray(im.convert("RGB"))
    data = marked_png([pixels], 1, size, mark, path.name) if mark else encode_png(pixels, size)
    return Response(data, media_type="image/png")


@router.post("/detect", response_model=DetectOut, responses=ERRORS,
             summary="was this made here? An image's or video's Content Credentials and invisible watermark")
async def detect(ctx: Ctx, file: Annotated[UploadFile, File(description="an image or an mp4 video")]):
    from ..provenance.detect import describe, detect_file

    what = _name(file, "the file")
    data = await _read(file, ctx.settings.max_video_mb, what)
    folder = ctx.work_folder / "detect"

    def run() -> dict:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, suffix=Path(what).suffix[:8]) as tmp:
            tmp.write(data)
            tmp.flush()
            try:
                report = detect_file(tmp.name)
            except FacesynthError as e:  # messages name the visitor's file, never our temporary path
                raise FacesynthError(str(e).replace(tmp.name, what)) from None
        report["file"] = what
        return {**report, "summary": describe(report)}

    return await run_in_threadpool(run)
