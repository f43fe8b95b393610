"""Render what affiliates receive (SPEC §6) from Jinja templates in a sandbox.

Default templates ship with the package; a producer's `templates_dir` overrides any
one of them by file name. Templates are producer-written code, so they run in an
immutable sandbox with `StrictUndefined`, and every failure becomes a `RenderError`
that names the file. The variables templates see are listed in templates/README.md.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from decimal import Decimal
from functools import partial
from html import escape as html_escape
from pathlib import Path
from typing import Any, NoReturn

from jinja2 import BaseLoader, ChoiceLoader, FileSystemLoader, TemplateNotFound, TemplateSyntaxError

from relay.formatting import (
    LOCALES,
    TEST_TAGS,
    format_amount,
    format_code,
    format_expiry,
    format_phone,
    http_url,
    iso_utc,
    json_dumps,
    single_line,
)
from relay.hotmart import SLIP_EVENT, Affiliate, Buyer, Event, Payment, Product, Purchase
from relay.notification import Notification as Notification
from relay.notification import notification_context
from relay.records import Notice
from relay.sandbox import MAX_BODY_CHARS, MAX_SUBJECT_CHARS, join_bounded, make_environment
from relay.sandbox import RenderError as RenderError
from relay.webhook_body import default_webhook_body
from relay.whatsapp import whatsapp_number, whatsapp_url

_TEMPLATE_EXTENSIONS = ("txt", "html", "json")
WEBHOOK_TEMPLATE = "webhook.json"
# The email templates of each notice: `<name>.<locale>.subject.txt`, `.txt` and `.html`.
_EMAIL_TEMPLATES = {
    Notice.SLIP: "billet_printed",
    Notice.REMINDER: "reminder",
    Notice.PAID: "paid",
    Notice.EXPIRED: "expired",
    Notice.EVENT: "generic",
}
# A prefilled WhatsApp message is a few lines; a Pix code (at most 1,024 characters when
# parsed) and a slip link (2,048) still fit twice over. More is a template gone wrong.
MAX_WHATSAPP_CHARS = 8192


@dataclass(frozen=True)
class RenderedEmail:
    subject: str  # always a single line: data cannot inject a header
    text: str
    html: str


@dataclass(frozen=True)
class DestinationAlert:
    """Tells a producer's alert_email that a destination was disabled after failing."""

    producer_name: str
    destination_key: str  # e.g. "acme/K12345678M/1"
    destination_label: str  # e.g. "webhook https://ana.example.com/hooks"
    last_error: str
    consecutive_failures: int


def default_templates_dir() -> Path:
    """Where the default templates are: inside the wheel, else at the source tree's top."""
    packaged = Path(__file__).parent / "templates"
    return packaged if packaged.is_dir() else Path(__file__).parent.parent / "templates"


class Templates:
    """Default templates plus an optional producer override folder (same file name wins)."""

    def __init__(self, override_dir: Path | None = None) -> None:
        self._override_dir = override_dir
        # Searched in this order: the producer's folder first, so its file of a name wins.
        self._folders = [default_templates_dir()]
        if override_dir is not None:
            self._folders.insert(0, override_dir)
        # Read once, like the templates: without an override the default body is built in
        # Python (relay.webhook_body), which costs a small fraction of a Jinja render.
        self._webhook_overridden = (
            override_dir is not None and (override_dir / WEBHOOK_TEMPLATE).is_file()
        )
        loaders: list[BaseLoader] = [FileSystemLoader(folder) for folder in self._folders]
        self._env = make_environment(
            ChoiceLoader(loaders),
            {
                "format_code": format_code,
                "format_amount": format_amount,
                "format_expiry": format_expiry,
                "format_phone": format_phone,
                "iso_utc": iso_utc,
                "http_url": http_url,
                "single_line": single_line,
            },
        )
        # `tojson` then writes a Decimal price as an exact JSON number, and keeps UTF-8 readable.
        self._env.policies["json.dumps_function"] = json_dumps
        self._env.policies["json.dumps_kwargs"] = {"sort_keys": True, "ensure_ascii": False}

    def email(self, n: Notification) -> RenderedEmail:
        """The subject, text and HTML for `n`, in its locale."""
        if n.locale not in LOCALES:
            raise RenderError(f"unknown locale {n.locale!r}; expected one of {', '.join(LOCALES)}")
        base = f"{_EMAIL_TEMPLATES[n.notice]}.{n.locale}"
        context = self._context(n)
        subject = single_line(self._render(f"{base}.subject.txt", context, MAX_SUBJECT_CHARS))
        tag = TEST_TAGS[n.locale]
        # Added here, not left to templates, so an override cannot make a test look real.
        if n.is_test and not subject.startswith(tag):
            subject = f"{tag} {subject}"
        return RenderedEmail(
            subject=subject,
            text=self._render(f"{base}.txt", context),
            html=self._render(f"{base}.html", context),
        )

    def webhook_body(self, n: Notification) -> bytes:
        """The UTF-8 JSON body POSTed to a webhook destination, checked to parse."""
        if not self._webhook_overridden:
            built = default_webhook_body(n, self._whatsapp_url(n, None))
            # Bytes are never fewer than characters: decode only when the bytes are over.
            if len(built) > MAX_BODY_CHARS and len(built.decode("utf-8")) > MAX_BODY_CHARS:
                raise RenderError(
                    f"{WEBHOOK_TEMPLATE}: rendered output is over {MAX_BODY_CHARS} characters"
                )
            return built
        name = WEBHOOK_TEMPLATE
        body = self._render(name, self._context(n))
        try:
            # NaN and Infinity parse in Python but not in most receivers: refuse them.
            json.loads(body, parse_constant=_reject_constant)
        except ValueError as exc:
            raise RenderError(f"{name}: rendered body is not valid JSON: {exc}") from None
        return body.encode("utf-8")

    def alert_email(self, alert: DestinationAlert) -> RenderedEmail:
        """The email telling a producer that a destination was disabled."""
        context = asdict(alert)
        text = self._render("alert.txt", context)
        return RenderedEmail(
            subject=single_line(self._render("alert.subject.txt", context, MAX_SUBJECT_CHARS)),
            text=text,
            html=f'<pre style="font-family: monospace">{html_escape(text)}</pre>\n',
        )

    def check(self) -> list[str]:
        """Compile every template and trial-render each message; human-readable problems.

        Layouts and partials (`_layout.html`, `_words.es.html`: names starting with `_`)
        are compiled with the rest but rendered only through the messages that use them,
        since alone they lack what those messages give them. A problem in one is reported
        once, naming it, however many messages share it.
        """
        problems: list[str] = []
        if self._override_dir is not None and not self._override_dir.is_dir():
            problems.append(f"{self._override_dir}: templates folder does not exist")
        for name in self._env.list_templates(extensions=_TEMPLATE_EXTENSIONS):
            try:
                self._env.get_template(name)
            except TemplateSyntaxError as exc:
                problems.append(self._describe(name, exc))
        # A trial render finds what compiling cannot: unknown variables, invalid JSON.
        for render in _trial_renders(self):
            try:
                render()
            except RenderError as exc:
                # One problem per place: trial data with and without a buyer can trip
                # the same line in two ways ("Buyer has no attribute", "None has no...").
                if _place(str(exc)) not in {_place(p) for p in problems}:
                    problems.append(str(exc))
        return problems

    def _context(self, n: Notification) -> dict[str, Any]:
        """What a notification's templates see, with the WhatsApp link when it has one."""
        context = notification_context(n)
        context["whatsapp_url"] = self._whatsapp_url(n, context)
        return context

    def _whatsapp_url(self, n: Notification, context: dict[str, Any] | None) -> str | None:
        """The link to the buyer's WhatsApp, when `n` asks for one and the phone allows."""
        if not n.whatsapp or n.event.buyer is None:
            return None
        number = whatsapp_number(n.event.buyer.phone, n.event.purchase.buyer_country)
        if number is None:
            return None
        # Rendered from its own template, so a producer can word it as they wish.
        name = f"whatsapp.{n.locale}.txt"
        context = notification_context(n) if context is None else context
        message = self._render(name, context, MAX_WHATSAPP_CHARS).strip()
        return whatsapp_url(number, message)

    def _render(self, name: str, context: dict[str, Any], max_chars: int = MAX_BODY_CHARS) -> str:
        """Render `name`, pulling its output piece by piece and stopping at `max_chars`."""
        try:
            return join_bounded(self._env.get_template(name).generate(context), max_chars, name)
        except RenderError:
            raise
        except Exception as exc:
            # Templates are producer code: whatever goes wrong in one must name the file.
            raise RenderError(self._describe(name, exc)) from exc

    def _describe(self, name: str, exc: Exception) -> str:
        """`billet_printed.es.html: line 3: unexpected '}'`, as check-config prints it.

        The file named is the one where it went wrong, which for an error in a layout or
        partial is that file, not the message `name` that extends or includes it.
        """
        if isinstance(exc, TemplateSyntaxError):
            return f"{exc.name or name}: line {exc.lineno}: {exc.message}"
        where, line = self._innermost_template(exc) or (name, None)
        if isinstance(exc, TemplateNotFound):
            return f"{where}: template {exc.name!r} not found"
        if line is not None:
            where = f"{where}: line {line}"
        if exc.__class__.__module__.startswith("jinja2"):  # UndefinedError, SecurityError
            return f"{where}: {exc}"
        return f"{where}: {type(exc).__name__}: {exc}"

    def _innermost_template(self, exc: BaseException) -> tuple[str, int] | None:
        """The template name and line of the last traceback frame in a template file."""
        # Jinja rewrites the frames of template code to point at the template's file and line.
        found = None
        trace = exc.__traceback__
        while trace is not None:
            name = self._template_name(trace.tb_frame.f_code.co_filename)
            if name is not None:
                found = (name, trace.tb_lineno)
            trace = trace.tb_next
        return found

    def _template_name(self, filename: str) -> str | None:
        """`_layout.html` for a file in one of the template folders, else None."""
        path = Path(os.path.normpath(filename))
        names = []
        for folder in self._folders:
            try:
                names.append(path.relative_to(os.path.normpath(folder)).as_posix())
            except ValueError:
                continue
        # Should one folder hold the other, the deeper one is where the file was found.
        return min(names, key=len, default=None)


def _place(problem: str) -> str:
    """`billet_printed.en.txt: line 2` of a problem, or its file alone when it has no line."""
    parts = problem.split(": ", 2)
    return ": ".join(parts[:2]) if len(parts) > 1 and parts[1].startswith("line ") else parts[0]


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not valid JSON")


# The event each notice is sent for, in a trial render.
_TRIAL_EVENTS = {
    Notice.SLIP: SLIP_EVENT,
    Notice.REMINDER: SLIP_EVENT,
    Notice.PAID: "PURCHASE_APPROVED",
    Notice.EXPIRED: "PURCHASE_EXPIRED",
    Notice.EVENT: "PURCHASE_APPROVED",
}


def _trial_renders(templates: Templates) -> Iterator[Callable[[], object]]:
    """Each message the relay can render, with sample data, as a zero-argument callable."""
    payment = Payment(
        type="CASH_PAYMENT",
        method="OXXO",
        slip_url="https://pay.example.com/oxxo/HP0000000001",
        slip_code="93000004217642712001230000499007",
        expires_at_ms=1_764_357_600_000,
    )
    buyer = Buyer(name="Sample buyer", email="buyer@example.com", phone="+52 55 0000 0000")
    # Every notice's templates, the WhatsApp message with them; two variants of each so
    # both sides of the usual `if is_test` and `if buyer` branches run.
    for notice, event_name in _TRIAL_EVENTS.items():
        for is_test, maybe_buyer in ((True, buyer), (False, None)):
            event = Event(
                id="check-config",
                event=event_name,
                created_at_ms=1_764_271_200_000,
                product=Product(id="1", ucode="check-config", name="Sample product"),
                affiliates=(Affiliate(code="A0000000000", name="Sample affiliate"),),
                buyer=maybe_buyer,
                purchase=Purchase(
                    transaction="HP0000000001",
                    status="BILLET_PRINTED",
                    price=Decimal("499.00"),
                    currency="MXN",
                    country_iso="MX",
                ),
                payment=payment,
            )
            for locale in LOCALES:
                n = Notification(
                    event,
                    "A0000000000",
                    "Sample affiliate",
                    "Sample",
                    locale,
                    is_test,
                    "m",
                    notification=notice,
                    whatsapp=True,
                )
                yield partial(templates.email, n)
            yield partial(templates.webhook_body, n)
    alert = DestinationAlert("Sample", "sample/A0000000000/0", "email a@example.com", "timeout", 20)
    yield partial(templates.alert_email, alert)
