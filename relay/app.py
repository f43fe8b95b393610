"""Wire the aiohttp application: routes, and the resources that live as long as it does."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager

from aiohttp import web

from relay.ingest import handle_hotmart_post
from relay.runtime import RUNTIME, Runtime

RuntimeFactory = Callable[[], AbstractAsyncContextManager[Runtime]]


def make_app(
    open_runtime: RuntimeFactory, *, max_body_bytes: int, ingest_path: str
) -> web.Application:
    """Build the app; `open_runtime` opens the store (and the dispatcher) on startup."""
    # aiohttp enforces the body limit itself, with a 413, even for chunked uploads.
    app = web.Application(client_max_size=max_body_bytes)

    async def runtime_ctx(app: web.Application) -> AsyncIterator[None]:
        async with open_runtime() as runtime:
            app[RUNTIME] = runtime
            yield

    app.cleanup_ctx.append(runtime_ctx)
    app.router.add_post(ingest_path, handle_hotmart_post)
    app.router.add_get("/healthz", handle_healthz)
    return app


async def handle_healthz(request: web.Request) -> web.Response:
    try:
        await request.app[RUNTIME].store.ping()
    except Exception as exc:  # any failure to answer means unhealthy
        return web.json_response({"status": "unavailable", "error": str(exc)}, status=503)
    return web.json_response({"status": "ok"})
