"""The FastAPI application: the API, the static page, error handling and the body-size cap, wired together.
The model is loaded when the app starts (once), and the batcher's thread lives as long as the app."""

from __future__ import annotations

from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from .. import __version__
from . import handlers
from .api import router
from .context import ServerContext
from .head import HeadAsGet
from .limits import BodyLimit
from .settings import ServerSettings

STATIC = Path(__file__).with_name("static")


def api_docs(app: FastAPI) -> None:
    """/docs (Swagger UI) and /redoc from files shipped in static/ (see static/THIRD-PARTY.md): FastAPI's own
    pages load them from a CDN, and a server with no way out showed blank pages."""
    icon = "/static/favicon.svg"

    @app.get("/docs", include_in_schema=False)
    def swagger():
        # No validator badge: Swagger UI would fetch it from validator.swagger.io.
        return get_swagger_ui_html(openapi_url=app.openapi_url, title=f"{app.title} API",
                                   swagger_js_url="/static/swagger-ui-bundle.js",
                                   swagger_css_url="/static/swagger-ui.css", swagger_favicon_url=icon,
                                   swagger_ui_parameters={"validatorUrl": None})

    @app.get("/redoc", include_in_schema=False)
    def redoc():
        return get_redoc_html(openapi_url=app.openapi_url, title=f"{app.title} API",
                              redoc_js_url="/static/redoc.standalone.js", redoc_favicon_url=icon,
                              with_google_fonts=False)


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

    app = FastAPI(title="facesynth", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
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

    api_docs(app)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(HeadAsGet)
    return app
