"""The FastAPI application: the API, the static page, error handling and the body-size cap, wired together.
The model is loaded when the app starts (once), and the batcher's thread lives as long as the app."""

from __future__ import annotations

from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from .. import __version__
from . import handlers
from .api import router
from .context import ServerContext
from .limits import BodyLimit
from .settings import ServerSettings

STATIC = Path(__file__).with_name("static")


def create_app(settings: ServerSettings | None = None) -> FastAPI:
    settings = settings or ServerSettings()
    ctx = ServerContext(settings)  # loads the model now: a bad --ckpt fails before the server listens

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        ctx.start()
        try:
            yield
        finally:
            ctx.stop()

    app = FastAPI(title="facesynth", version=__version__, lifespan=lifespan,
                  description="Faces of people who do not exist, style mixing, interpolation, and your own photo "
                              "projected into the generator or animated. Images are PNG; errors are "
                              '`{"detail": "..."}`.')
    app.state.ctx = ctx
    handlers.install(app)
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    def index():
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    @app.get("/healthz", include_in_schema=False)
    def health():
        return {"ok": True}

    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    return app
