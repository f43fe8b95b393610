"""Signing in to the admin pages, and the guard every page passes first.

Without a valid session cookie a page redirects to the login form; a form posted
without its CSRF token is refused (403). Logging in checks the token in constant time,
at a rate each address may not exceed, and sets a signed cookie: HttpOnly,
SameSite=Strict, and Secure when the request came over HTTPS (here or at the proxy).
"""

from __future__ import annotations

import logging
import math
from urllib.parse import quote

from aiohttp import web

from relay.admin import actions
from relay.admin.auth import SESSION_COOKIE, SESSION_TTL_S
from relay.admin.html import error_page, render
from relay.admin.state import (
    PAGE_HEADERS,
    SESSION,
    Handler,
    actor,
    admin_of,
    came_over_https,
    peer,
    relay_of,
    see_other,
    with_headers,
)
from relay.logs import escape_controls
from relay.store import StoreUnavailable

log = logging.getLogger("relay.admin")

LOGIN_PATH = "/admin/login"
HOME_PATH = "/admin/deliveries"
COOKIE_PATH = "/admin/"
_OPEN_PATHS = (LOGIN_PATH, "/admin/static/")
MAX_NEXT_CHARS = 2000


@web.middleware
async def page_guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Sign-in and CSRF first; the security headers on every answer, errors included."""
    try:
        response = await _checked(request, handler)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = error_page(request, exc.status, exc.reason, "")
    except StoreUnavailable:
        response = error_page(
            request, 503, "Store unavailable", "The store cannot be read or written right now."
        )
    return with_headers(response, PAGE_HEADERS)


async def _checked(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path.startswith(_OPEN_PATHS):
        return await handler(request)
    admin = admin_of(request)
    session = admin.keys.session(request.cookies.get(SESSION_COOKIE), admin.now_s())
    if session is None:
        if request.method == "GET":
            return see_other(f"{LOGIN_PATH}?next={quote(request.path_qs[:MAX_NEXT_CHARS])}")
        return see_other(LOGIN_PATH)
    request[SESSION] = session
    if request.method == "POST":
        form = await request.post()
        token = form.get("csrf")
        if not admin.keys.csrf_matches(session, token if isinstance(token, str) else None):
            log.warning("admin: a form without its CSRF token from %s refused", peer(request))
            return error_page(
                request,
                403,
                "Form refused",
                "This form did not come from this page, or it is too old. Go back, reload "
                "the page and send it again.",
            )
    return await handler(request)


def safe_next(target: str | None) -> str:
    """Where to go after signing in: only a page of this admin, never another site."""
    if (
        target
        and target.startswith("/admin/")
        and not target.startswith("/admin//")
        and "\\" not in target
        and len(target) <= MAX_NEXT_CHARS
    ):
        return target
    return HOME_PATH


async def login_form(request: web.Request) -> web.Response:
    return render(request, "login.html", next=safe_next(request.query.get("next")), problem="")


async def login(request: web.Request) -> web.Response:
    admin = admin_of(request)
    address = peer(request)
    form = await request.post()
    target = safe_next(_text(form.get("next")))
    wait_s = admin.limiter.retry_after_s(address)
    if wait_s is not None:
        log.warning("admin: login from %s refused: too many wrong tokens", address)
        response = render(
            request,
            "login.html",
            status=429,
            next=target,
            problem=f"Too many wrong tokens from your address: wait {math.ceil(wait_s)} s.",
        )
        response.headers["Retry-After"] = str(math.ceil(wait_s))
        return response
    if not admin.keys.token_matches(_text(form.get("token")) or ""):
        admin.limiter.failed(address)
        log.warning("admin: wrong token in a login from %s", escape_controls(address))
        return render(request, "login.html", status=401, next=target, problem="Wrong token.")
    await actions.logged_in(relay_of(request), actor(request, "page"))
    response = see_other(target)
    response.set_cookie(
        SESSION_COOKIE,
        admin.keys.new_session(admin.now_s()),
        max_age=SESSION_TTL_S,
        path=COOKIE_PATH,
        httponly=True,
        samesite="Strict",
        secure=came_over_https(request),
    )
    return response


async def logout(request: web.Request) -> web.Response:
    response = see_other(LOGIN_PATH)
    response.del_cookie(SESSION_COOKIE, path=COOKIE_PATH)
    return response


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None
