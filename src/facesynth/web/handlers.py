"""Every error becomes ``{"detail": "<a sentence>"}`` with a 4xx status for the visitor's mistakes and 503
when the server is full; the server itself keeps serving."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from ..errors import FacesynthError
from .batcher import Busy
from .context import NotFound
from .jobs import QueueFull
from .uploads import UploadError

log = logging.getLogger("facesynth.web")


def _problem(status: int, detail: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def _field(loc) -> str:
    parts = [str(p) for p in loc if p not in ("query", "body", "path", "header")]
    return ".".join(parts) or "request"


def human_validation(exc: RequestValidationError) -> str:
    """FastAPI's list of errors as one sentence per field: 'psi: Input should be less than or equal to 2'."""
    msgs = []
    for err in exc.errors():
        field = _field(err.get("loc", ()))
        msgs.append(f"{field} is required" if err.get("type") == "missing" else f"{field}: {err.get('msg', 'invalid')}")
    return "; ".join(msgs) or "invalid request"


def install(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        return _problem(422, human_validation(exc))

    @app.exception_handler(UploadError)
    async def _upload(request: Request, exc: UploadError):
        return _problem(exc.status, exc.message)

    @app.exception_handler(NotFound)
    async def _not_found(request: Request, exc: NotFound):
        return _problem(404, str(exc))

    @app.exception_handler(FacesynthError)
    async def _facesynth(request: Request, exc: FacesynthError):
        return _problem(422, str(exc))

    @app.exception_handler(Busy)
    async def _busy(request: Request, exc: Busy):
        return _problem(503, str(exc), {"Retry-After": "5"})

    @app.exception_handler(QueueFull)
    async def _full(request: Request, exc: QueueFull):
        return _problem(503, str(exc), {"Retry-After": "60"})

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception):
        log.exception("%s %s failed", request.method, request.url.path)
        return _problem(500, f"internal error ({type(exc).__name__}); the server logged the details")
