"""What the admin pages and the API share on the HTTP side: their state, the typed keys
to reach it, who is asking, and the headers every answer carries."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import jinja2
from aiohttp import web

from relay.admin.actions import Actor
from relay.admin.auth import AdminKeys, Session
from relay.admin.ratelimit import LoginLimiter
from relay.admin.schemas import MAX_ID
from relay.app_keys import RELAY
from relay.engine import Relay

HERE = Path(__file__).parent
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Pages load only their own stylesheet and script, post only to themselves, and are
# never framed: a strict policy, since they show buyer data.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",  # buyer data must not stay in a shared cache
}
API_HEADERS = {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"}


@dataclass
class AdminState:
    """One per app: the keys derived from the admin token, the login limiter, the
    templates and the static files, all built when the app is made."""

    keys: AdminKeys
    limiter: LoginLimiter
    templates: jinja2.Environment
    static: dict[str, tuple[bytes, str]]  # file name -> (content, content type)
    wall_clock_s: Callable[[], float] = field(default=time.time)

    def now_s(self) -> int:
        return int(self.wall_clock_s())


ADMIN = web.AppKey("admin", AdminState)
SESSION = web.RequestKey("admin session", Session)


def path_id(request: web.Request) -> int:
    """The row id in the path (its route allows only digits); 404 beyond any row id."""
    value = int(request.match_info["id"])
    if not 1 <= value <= MAX_ID:
        raise web.HTTPNotFound()
    return value


def relay_of(request: web.Request) -> Relay:
    return request.config_dict[RELAY]


def admin_of(request: web.Request) -> AdminState:
    return request.config_dict[ADMIN]


def peer(request: web.Request) -> str:
    return request.remote or "unknown"


def actor(request: web.Request, via: str) -> Actor:
    return Actor.of(via, request.remote, request.headers.get("X-Forwarded-For"))


def came_over_https(request: web.Request) -> bool:
    """HTTPS here, or at the proxy in front (which says so in X-Forwarded-Proto)."""
    forwarded = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
    return request.secure or forwarded == "https"


def with_headers(response: web.StreamResponse, headers: dict[str, str]) -> web.StreamResponse:
    for name, value in headers.items():
        response.headers.setdefault(name, value)
    return response


def see_other(location: str) -> web.Response:
    """A redirect after a POST (303), as a plain response middlewares can decorate."""
    return web.Response(status=303, headers={"Location": location})


def load_static() -> dict[str, tuple[bytes, str]]:
    types = {".css": "text/css", ".js": "text/javascript"}
    return {
        path.name: (path.read_bytes(), types[path.suffix])
        for path in sorted((HERE / "static").iterdir())
        if path.suffix in types
    }


async def handle_static(request: web.Request) -> web.Response:
    found = admin_of(request).static.get(request.match_info["name"])
    if found is None:
        raise web.HTTPNotFound()
    content, content_type = found
    return web.Response(body=content, content_type=content_type)
