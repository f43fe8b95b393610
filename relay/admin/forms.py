"""The admin pages' actions: each a POST (its CSRF token checked by the guard first),
done by `relay.admin.actions`, then a redirect to a page that says what it did, from
the audit entry it wrote (`?audit=N`)."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit

from aiohttp import web
from multidict import MultiDictProxy

from relay.admin import actions
from relay.admin.filters import moment_ms
from relay.admin.html import error_page
from relay.admin.login import HOME_PATH, safe_next
from relay.admin.schemas import MAX_ID
from relay.admin.state import actor, relay_of, see_other

MAX_SELECTED = 1000  # one page shows at most 200; a crafted form gets no more than this
Form = MultiDictProxy[str | bytes | bytearray | web.FileField]


async def replay(request: web.Request) -> web.Response:
    form = await request.post()
    ids = _ids(form)
    if not ids:
        return error_page(request, 400, "Nothing selected", "Select the deliveries to send again.")
    done = await actions.replay(relay_of(request), actor(request, "page"), ids)
    return see_other(_with_audit(safe_next(_text(form, "return_to")), done.audit_id))


async def replay_failed(request: web.Request) -> web.Response:
    form = await request.post()
    relay = relay_of(request)
    since = _text(form, "since") or ""
    try:
        since_ms = moment_ms(since, relay.clock.now_ms(), end_of_day=False) if since else None
    except ValueError as exc:
        return error_page(request, 400, "Not a date", str(exc))
    done = await actions.replay_failed(relay, actor(request, "page"), since_ms, since)
    return see_other(_with_audit(HOME_PATH, done.audit_id))


async def send_test(request: web.Request) -> web.Response:
    form = await request.post()
    affiliate = _text(form, "affiliate")
    if not affiliate:
        return error_page(request, 400, "No affiliate", "Name the affiliate to send a test to.")
    done = await actions.send_test(
        relay_of(request),
        actor(request, "page"),
        affiliate=affiliate,
        destination=_text(form, "destination") or None,
        producer=_text(form, "producer") or None,
    )
    return see_other(_with_audit("/admin/destinations", done.audit_id))


async def enable(request: web.Request) -> web.Response:
    return await _set_enabled(request, True)


async def disable(request: web.Request) -> web.Response:
    return await _set_enabled(request, False)


async def _set_enabled(request: web.Request, enabled: bool) -> web.Response:
    form = await request.post()
    key = _text(form, "key") or ""
    done = await actions.set_enabled(relay_of(request), actor(request, "page"), key, enabled)
    if done.refused:
        return error_page(request, 404, "No such destination", done.message)
    return see_other(_with_audit("/admin/destinations", done.audit_id))


def _with_audit(path: str, audit_id: int) -> str:
    """`path` with `audit=N` in place of any it had, for the page to say what was done."""
    parts = urlsplit(path)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "audit"]
    query.append(("audit", str(audit_id)))
    return f"{parts.path}?{urlencode(query)}"


def _text(form: Form, name: str) -> str | None:
    value = form.get(name)
    return value.strip()[:200] if isinstance(value, str) else None


def _ids(form: Form) -> list[int]:
    found = []
    for value in form.getall("ids", [])[:MAX_SELECTED]:
        if isinstance(value, str) and value.isdigit() and 1 <= int(value) <= MAX_ID:
            found.append(int(value))
    return sorted(set(found))
