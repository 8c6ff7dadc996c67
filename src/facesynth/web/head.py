"""HEAD answered everywhere GET is: FastAPI's routes declare GET alone, so link checkers, monitors and
`curl -I` got 405.  The request runs as a GET and its body is dropped; the headers (Content-Length,
Content-Type) stay those a GET would get."""

from __future__ import annotations


class HeadAsGet:
    """ASGI middleware: HEAD -> GET without the body."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "HEAD":
            return await self.app(scope, receive, send)

        async def headers_only(message):
            if message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, headers_only)
