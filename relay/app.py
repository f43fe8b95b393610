"""Wire the aiohttp application: one `init_app(config)`, its routes, and the running
relay that lives as long as it does (`cleanup_ctx`)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from relay.admin import setup_admin
from relay.app_keys import RELAY
from relay.clock import Clock
from relay.config import Config
from relay.engine import open_relay, running
from relay.ingest import handle_hotmart_post
from relay.json_reply import json_reply
from relay.metrics import bearer_matches
from relay.readiness import PROBE_INTERVAL_S


def init_app(
    config: Config,
    *,
    clock: Clock | None = None,
    wake_on_signal: bool = False,
    probe_interval_s: float = PROBE_INTERVAL_S,
) -> web.Application:
    """The app for `config`: on startup it opens the relay (store, channels, dispatcher)
    and runs it; on cleanup it drains and closes it. `wake_on_signal`: see `running`."""
    # aiohttp enforces the body limit itself, with a 413, even for chunked uploads.
    app = web.Application(client_max_size=config.server.max_body_bytes, middlewares=[json_errors])

    async def relay_ctx(app: web.Application) -> AsyncIterator[None]:
        async with (
            open_relay(config, clock=clock) as relay,
            running(relay, wake_on_signal=wake_on_signal, probe_interval_s=probe_interval_s),
        ):
            app[RELAY] = relay
            yield

    async def draining(app: web.Application) -> None:
        # Shutdown has begun: say so at once, before attempts in flight are drained.
        if RELAY in app:
            app[RELAY].readiness.draining = True

    app.cleanup_ctx.append(relay_ctx)
    app.on_shutdown.append(draining)
    app.router.add_post(config.server.path, handle_hotmart_post)
    app.router.add_get("/livez", handle_livez)
    app.router.add_get("/readyz", handle_readyz)
    app.router.add_get("/healthz", handle_readyz)  # the name older setups probe
    app.router.add_get("/metrics", handle_metrics)
    setup_admin(app, config)  # /admin/ and /api/, when admin.token is set
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
        return json_reply(
            {"error": exc.reason.lower(), "details": [f"{request.method} {request.path}"]},
            status=exc.status,
            headers={k: v for k, v in exc.headers.items() if k.lower() == "allow"},
        )


async def handle_livez(request: web.Request) -> web.Response:
    """The process answers: nothing more is checked, so a busy store never fails it."""
    return json_reply({"status": "ok"})


async def handle_readyz(request: web.Request) -> web.Response:
    """Can this relay accept and deliver? From state only: it never waits on the store."""
    ready, body = request.app[RELAY].readiness.report()
    return json_reply(body, status=200 if ready else 503)


async def handle_metrics(request: web.Request) -> web.Response:
    """Prometheus exposition; behind `admin.metrics_token` when one is set."""
    relay = request.app[RELAY]
    token = relay.config.admin.metrics_token
    if token is not None and not bearer_matches(request.headers.get("Authorization"), token):
        return json_reply(
            {"error": "unauthorized", "details": ["send Authorization: Bearer <metrics_token>"]},
            status=401,
            headers={"WWW-Authenticate": 'Bearer realm="relay metrics"'},
        )
    body, content_type = await relay.metrics.exposition(
        relay.store.queue_gauges, request.headers.get("Accept", "")
    )
    return web.Response(body=body, headers={"Content-Type": content_type})
