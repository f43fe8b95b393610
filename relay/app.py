"""Wire the aiohttp application: routes, and the resources that live as long as it does."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
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
    app = web.Application(client_max_size=max_body_bytes, middlewares=[json_errors])

    async def runtime_ctx(app: web.Application) -> AsyncIterator[None]:
        async with open_runtime() as runtime:
            app[RUNTIME] = runtime
            yield

    async def draining(app: web.Application) -> None:
        # Shutdown has begun: say so at once, before attempts in flight are drained.
        if RUNTIME in app:
            app[RUNTIME].readiness.draining = True

    app.cleanup_ctx.append(runtime_ctx)
    app.on_shutdown.append(draining)
    app.router.add_post(ingest_path, handle_hotmart_post)
    app.router.add_get("/livez", handle_livez)
    app.router.add_get("/readyz", handle_readyz)
    app.router.add_get("/healthz", handle_readyz)  # the name older setups probe
    return app


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """aiohttp's own 404 and 405 are plain text: every refusal here answers in JSON."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400 or exc.content_type == "application/json":
            raise
        return web.json_response(
            {"error": exc.reason.lower(), "details": [f"{request.method} {request.path}"]},
            status=exc.status,
            headers={k: v for k, v in exc.headers.items() if k.lower() == "allow"},
        )


async def handle_livez(request: web.Request) -> web.Response:
    """The process answers: nothing more is checked, so a busy store never fails it."""
    return web.json_response({"status": "ok"})


async def handle_readyz(request: web.Request) -> web.Response:
    """Can this relay accept and deliver? From state only: it never waits on the store."""
    ready, body = request.app[RUNTIME].readiness.report()
    return web.json_response(body, status=200 if ready else 503)
