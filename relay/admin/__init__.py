"""The admin page (/admin/) and its JSON API (/api/), mounted on the relay's app.

Both exist only when `admin.token` is set. Without it they answer 404 with the reason,
and the app says so once when it is made, so `relay serve` tells the operator at start.
Each is a sub-application with its own guard: the pages redirect to a login form and
check CSRF tokens; the API wants a Bearer token and answers in JSON.
"""

from __future__ import annotations

import logging
from importlib.metadata import PackageNotFoundError, version

from aiohttp import web

from relay.admin import api, forms, login, pages
from relay.admin.auth import AdminKeys
from relay.admin.html import page_templates
from relay.admin.openapi import openapi_document
from relay.admin.ratelimit import LoginLimiter
from relay.admin.state import ADMIN, AdminState, handle_static, load_static, see_other
from relay.config import Config

log = logging.getLogger("relay.admin")

ID = "{id:[0-9]{1,19}}"
OFF_REASON = "the admin page and API are off: set admin.token in the config to turn them on"


def setup_admin(
    app: web.Application, config: Config, *, limiter: LoginLimiter | None = None
) -> None:
    """Mount /admin/ and /api/ on `app`, or the routes that say they are off."""
    token = config.admin.token
    if not token:
        log.warning("admin: %s", OFF_REASON)
        app.router.add_route("*", "/admin{tail:.*}", _off)
        app.router.add_route("*", "/api{tail:.*}", _off)
        return
    app[ADMIN] = AdminState(
        keys=AdminKeys(token),
        limiter=limiter or LoginLimiter(),
        templates=page_templates(),
        static=load_static(),
    )
    app.router.add_get("/admin", _to_home)
    app.add_subapp("/admin/", _pages())
    app.add_subapp("/api/", _api())
    log.info("admin: the admin page is at /admin/ and its API at /api/ (see /api/openapi.json)")


async def _off(request: web.Request) -> web.Response:
    return web.json_response({"error": "not found", "details": [OFF_REASON]}, status=404)


async def _to_home(request: web.Request) -> web.Response:
    return see_other(login.HOME_PATH)


def _pages() -> web.Application:
    sub = web.Application(middlewares=[login.page_guard])
    r = sub.router
    r.add_get("/", _to_home)
    r.add_get("/login", login.login_form)
    r.add_post("/login", login.login)
    r.add_post("/logout", login.logout)
    r.add_get("/static/{name}", handle_static)
    r.add_get("/deliveries", pages.deliveries_page)
    r.add_get(f"/deliveries/{ID}", pages.delivery_page)
    r.add_post(f"/deliveries/{ID}/reveal", pages.reveal_delivery)
    r.add_get(f"/events/{ID}", pages.event_page)
    r.add_post(f"/events/{ID}/reveal", pages.reveal_event)
    r.add_get("/destinations", pages.destinations_page)
    r.add_get("/audit", pages.audit_page)
    r.add_get("/recovery", pages.recovery_page)
    r.add_post("/replay", forms.replay)
    r.add_post("/replay-failed", forms.replay_failed)
    r.add_post("/send-test", forms.send_test)
    r.add_post("/destinations/enable", forms.enable)
    r.add_post("/destinations/disable", forms.disable)
    return sub


def _api() -> web.Application:
    sub = web.Application(middlewares=[api.api_guard])
    r = sub.router
    r.add_get("/deliveries", api.list_deliveries)
    r.add_get(f"/deliveries/{ID}", api.get_delivery)
    r.add_post(f"/deliveries/{ID}/reveal", api.reveal_delivery)
    r.add_post(f"/deliveries/{ID}/replay", api.replay_delivery)
    r.add_post("/replay", api.replay_many)
    r.add_post("/send-test", api.send_test)
    r.add_get("/destinations", api.list_destinations)
    # A key holds slashes (producer/affiliate/id): sent as they are or as %2F, both match.
    r.add_post("/destinations/{key:.+}/enable", api.enable_destination)
    r.add_post("/destinations/{key:.+}/disable", api.disable_destination)
    r.add_get(f"/events/{ID}", api.get_event)
    r.add_get("/audit", api.list_audit)
    r.add_get("/openapi.json", _openapi)
    return sub


async def _openapi(request: web.Request) -> web.Response:
    try:
        current = version("relay")
    except PackageNotFoundError:  # a source tree never installed
        current = "0"
    return web.json_response(openapi_document(current))
