"""`facesynth serve`: a "this person does not exist" page and the JSON API behind it.

Modules, one job each: ``settings`` (limits and paths), ``params`` (the ranges of seeds, psi, sizes and
frames that the API, /api/info and the page share), ``faces`` (the generator and the latents a request asks
for), ``batcher`` (concurrent requests drawn in one forward pass), ``png`` (scaling, tiling, encoding and a
byte-bounded cache), ``jobs`` (long work in a bounded queue with progress), ``uploads`` (size, type and face
checks), ``tasks`` (the projection and animation jobs), ``limits`` (request-body cap), ``head`` (HEAD
answered as GET), ``api`` (the routes), ``app`` (wiring, and /docs and /redoc from static/), ``server``
(uvicorn).  Needs ``pip install 'facesynth[web]'``.
"""

from __future__ import annotations

from .settings import ServerSettings

__all__ = ["ServerSettings", "create_app", "serve"]


def create_app(settings: ServerSettings | None = None):
    from .app import create_app as _create

    return _create(settings)


def serve(settings: ServerSettings | None = None, host: str = "127.0.0.1", port: int = 8000) -> None:
    from .server import serve as _serve

    _serve(settings, host, port)
