"""Render the admin pages: Jinja with autoescape on, from templates shipped in the wheel."""

from __future__ import annotations

import json
from typing import Any

import jinja2
from aiohttp import web

from relay.admin.state import HERE, SESSION, admin_of, relay_of
from relay.durations import duration_text, glance_text
from relay.formatting import iso_utc


def page_templates() -> jinja2.Environment:
    """The pages' environment: every value escaped, every name required to exist."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["pretty"] = pretty
    env.filters["when"] = when
    env.filters["when_ms"] = when_ms
    env.filters["duration_ms"] = duration_ms
    return env


def pretty(text: str | dict[str, Any]) -> str:
    """JSON laid out to read; anything else as it is."""
    if isinstance(text, dict):
        return json.dumps(text, indent=2, ensure_ascii=False)
    try:
        return json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    except ValueError:
        return text


def when(iso: str | None) -> str:
    """`2026-11-29T22:00:00.123Z` as `2026-11-29 22:00:00 UTC`."""
    if not iso:
        return "-"
    return iso.replace("T", " ").partition(".")[0].removesuffix("Z") + " UTC"


def render(
    request: web.Request, template: str, *, status: int = 200, **context: Any
) -> web.Response:
    """A page, with what every page shows: the CSRF token for its forms, the retention."""
    admin = admin_of(request)
    session = request.get(SESSION)
    config = relay_of(request).config
    context.setdefault("notice", None)  # what the action that led here did, if any
    html = admin.templates.get_template(template).render(
        csrf=admin.keys.csrf_token(session) if session else "",
        signed_in=session is not None,
        retention=duration_text(config.storage.retention_s),
        path=request.path,
        **context,
    )
    return web.Response(text=html, content_type="text/html", status=status)


def when_ms(epoch_ms: int) -> str:
    """Epoch milliseconds as `when` writes them."""
    return when(iso_utc(epoch_ms))


def duration_ms(milliseconds: float | None) -> str:
    """`5h 12m` for a span of milliseconds; `-` when there is none."""
    return "-" if milliseconds is None else glance_text(milliseconds / 1000)


def error_page(request: web.Request, status: int, title: str, message: str) -> web.Response:
    return render(request, "error.html", status=status, title=title, message=message)
