"""Runs the app with uvicorn (one process: the model and the batching queue live in it)."""

from __future__ import annotations

import sys

from .settings import ServerSettings


def serve(settings: ServerSettings | None = None, host: str = "127.0.0.1", port: int = 8000) -> None:
    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError:
        from ..errors import FacesynthError

        raise FacesynthError("the web server needs its extra: pip install 'facesynth[web]'") from None
    from .app import create_app

    app = create_app(settings)
    print(f"facesynth: serving {app.state.ctx.model.describe()['name']} on http://{host}:{port}/ "
          f"(API docs at /docs)", file=sys.stderr)
    uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=5)


class BackgroundServer:
    """The real server on a free loopback port in a thread, for tests, benchmarks and screenshots:
    ``with BackgroundServer(settings) as url: ...``."""

    def __init__(self, settings: ServerSettings | None = None, host: str = "127.0.0.1", port: int = 0):
        self.settings, self.host, self.port = settings, host, port

    def __enter__(self) -> str:
        import socket
        import threading
        import time

        import uvicorn

        from .app import create_app

        if not self.port:
            with socket.socket() as s:
                s.bind((self.host, 0))
                self.port = s.getsockname()[1]
        config = uvicorn.Config(create_app(self.settings), host=self.host, port=self.port, log_level="warning",
                                timeout_graceful_shutdown=2)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="facesynth-server", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.02)
        return f"http://{self.host}:{self.port}"

    def __exit__(self, *exc) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=15)
