"""`facesynth serve`: a "this person does not exist" page and the JSON API behind it.

Modules, one job each: ``settings`` (limits and paths), ``faces`` (the generator and the latents a
request asks for), ``batcher`` (concurrent requests drawn in one forward pass), ``png`` (encoding and
a byte-bounded cache), ``jobs`` (long work in a bounded queue with progress), ``uploads`` (size, type
and face checks), ``tasks`` (the projection and animation jobs), ``limits`` (request-body cap),
``api`` (the routes), ``app`` (wiring), ``server`` (uvicorn).  Needs ``pip install 'facesynth[web]'``.
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
