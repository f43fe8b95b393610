"""Signed webhook delivery: Standard Webhooks headers, Svix-style outcomes, an SSRF guard.

Success is a 2xx and nothing else. Redirects are never followed (a receiver cannot
bounce a signed payload somewhere we did not check). The response is judged into
an `AttemptReport` or a `TransientError` / `PermanentError`; the body sent is never
logged or echoed, as it carries buyer PII.
"""

from __future__ import annotations

import codecs
import math
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import aiohttp
from aiohttp.abc import AbstractResolver
from aiohttp.resolver import DefaultResolver
from standardwebhooks import Webhook
from standardwebhooks.webhooks import EmptyWebhookSecretError
from yarl import URL

from relay.addresses import is_forbidden_address, parse_ip_literal
from relay.channels.address_guard import (
    AddressRefusedError,
    GuardedResolver,
    refusal_reason,
)
from relay.channels.base import (
    MAX_RESPONSE_EXCERPT_BYTES,
    AttemptReport,
    PermanentError,
    TransientError,
    WebhookMessage,
)

USER_AGENT = "relay/0.1"
# Kept in the history because they explain an outcome; the rest is noise.
HEADERS_OF_NOTE = ("content-type", "retry-after", "location", "x-request-id")
# Svix retries these: the receiver is busy or broken, not refusing the message.
RETRYABLE_4XX = frozenset({408, 429})
# Retry-After is honoured only where HTTP gives it that meaning for a retry.
RETRY_AFTER_STATUSES = frozenset({429, 503})
GONE = 410


class WebhookChannel:
    """Posts signed webhooks through the one session `open_webhook_channel` owns."""

    def __init__(
        self, session: aiohttp.ClientSession, *, timeout_s: float, allow_private_networks: bool
    ) -> None:
        self._session = session
        self._timeout_s = timeout_s
        self._allow_private_networks = allow_private_networks
        # One signer per secret, made once: each decodes its secret when built. Secrets
        # come from the config, so this holds as many as the config names.
        self._signers: dict[str, Webhook] = {}

    async def send(self, message: WebhookMessage, *, now_s: float | None = None) -> AttemptReport:
        """POST one message; return the report of a 2xx or raise a DeliveryError."""
        url = self._checked_url(message.url)
        sent_at_s = time.time() if now_s is None else now_s
        headers = signed_headers(message, sent_at_s, self._signer(message.secret))
        started = time.perf_counter()
        try:
            async with self._session.post(
                url, data=message.body, headers=headers, allow_redirects=False
            ) as response:
                excerpt, cut = await _read_excerpt(response)
                report = AttemptReport(
                    status_code=response.status,
                    response_excerpt=excerpt,
                    response_cut=cut,
                    response_headers=_headers_of_note(response.headers),
                    latency_ms=_elapsed_ms(started),
                    detail=f"{response.status} {response.reason or ''}".rstrip(),
                )
        except AddressRefusedError as exc:
            reason = refusal_reason(exc.host)
            raise PermanentError(reason, _failure(started, reason)) from None
        except TimeoutError:
            reason = f"timed out after {self._timeout_s:g}s"
            raise TransientError(reason, _failure(started, reason)) from None
        except aiohttp.InvalidURL as exc:
            reason = f"invalid URL: {exc}"
            raise PermanentError(reason, _failure(started, reason)) from None
        except (aiohttp.ClientError, OSError) as exc:
            reason = f"connection failed: {_describe(exc)}"
            raise TransientError(reason, _failure(started, reason)) from None
        return judge(report, now_s=sent_at_s)

    def _signer(self, secret: str) -> Webhook:
        signer = self._signers.get(secret)
        if signer is None:
            signer = self._signers[secret] = signer_for(secret)
        return signer

    def _checked_url(self, url: str) -> URL:
        try:
            parsed = URL(url)
        except ValueError:
            raise PermanentError(f"not a valid URL: {url}") from None
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise PermanentError(f"not an http(s) URL: {url}")
        if not self._allow_private_networks:
            # aiohttp connects to IP literals without asking the resolver.
            literal = parse_ip_literal(parsed.host)
            if literal is not None and is_forbidden_address(literal):
                raise PermanentError(refusal_reason(parsed.host))
        return parsed


@asynccontextmanager
async def open_webhook_channel(
    *, timeout_s: float, concurrency: int, allow_private_networks: bool
) -> AsyncIterator[WebhookChannel]:
    """Own the one ClientSession (and its resolver) for the life of the block."""
    resolver: AbstractResolver = DefaultResolver()
    if not allow_private_networks:
        resolver = GuardedResolver(resolver)
    try:
        connector = aiohttp.TCPConnector(limit=concurrency, resolver=resolver)
        async with aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=timeout_s),
            # One receiver's cookies must never reach another.
            cookie_jar=aiohttp.DummyCookieJar(),
            # Proxy settings from the environment would bypass the address guard.
            trust_env=False,
        ) as session:
            yield WebhookChannel(
                session, timeout_s=timeout_s, allow_private_networks=allow_private_networks
            )
    finally:
        # The connector closes only resolvers it created itself.
        await resolver.close()


def signer_for(secret: str) -> Webhook:
    """The Standard Webhooks signer of a `whsec_` secret; PermanentError if it is not one."""
    try:
        return Webhook(secret)
    except (ValueError, EmptyWebhookSecretError):
        raise PermanentError("webhook secret is not a valid whsec_ secret") from None


def signed_headers(message: WebhookMessage, sent_at_s: float, signer: Webhook) -> dict[str, str]:
    """Standard Webhooks headers over `id.timestamp.body`; PermanentError if unsignable."""
    try:
        body_text = message.body.decode("utf-8")
    except UnicodeDecodeError:
        raise PermanentError("webhook body is not valid UTF-8") from None
    timestamp = datetime.fromtimestamp(sent_at_s, UTC)
    return {
        "webhook-id": message.message_id,
        "webhook-timestamp": str(math.floor(sent_at_s)),
        "webhook-signature": signer.sign(message.message_id, timestamp, body_text),
        "content-type": "application/json",
        "user-agent": USER_AGENT,
    }


def judge(report: AttemptReport, *, now_s: float) -> AttemptReport:
    """Return the report of a 2xx; raise the error a non-2xx status stands for."""
    status = report.status_code or 0
    if 200 <= status < 300:
        return report
    if 300 <= status < 400:
        location = report.response_headers.get("location", "no Location")
        # Svix counts a redirect as a failed attempt and retries it on the schedule.
        raise TransientError(f"redirect not followed ({status} to {location})", report)
    if status == GONE:
        raise PermanentError(
            "410 Gone: the receiver asked us to stop sending", report, disable_destination=True
        )
    if status in RETRYABLE_4XX or status >= 500:
        retry_after_s = None
        if status in RETRY_AFTER_STATUSES:
            retry_after_s = parse_retry_after_s(
                report.response_headers.get("retry-after", ""), now_s=now_s
            )
        raise TransientError(f"HTTP {report.detail}", report, retry_after_s=retry_after_s)
    raise PermanentError(f"HTTP {report.detail}", report)


def parse_retry_after_s(value: str, *, now_s: float) -> float | None:
    """Seconds to wait from a Retry-After of delta-seconds or an HTTP-date; None if unusable."""
    value = value.strip()
    if not value:
        return None
    # ASCII only: "²".isdigit() is True yet float() refuses it, and float() reads "١٢"
    # (Arabic-Indic digits), which no HTTP sender means as delta-seconds.
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)  # HTTP-dates are GMT by definition
    return max(0.0, when.timestamp() - now_s)


async def _read_excerpt(response: aiohttp.ClientResponse) -> tuple[str, bool]:
    """The start of the body, and whether the receiver sent more than that."""
    # Read no more than the history keeps: a huge or endless body costs nothing.
    raw = bytearray()
    while len(raw) < MAX_RESPONSE_EXCERPT_BYTES:
        chunk = await response.content.read(MAX_RESPONSE_EXCERPT_BYTES - len(raw))
        if not chunk:
            break
        raw += chunk
    cut = len(raw) >= MAX_RESPONSE_EXCERPT_BYTES and not response.content.at_eof()
    text = bytes(raw).decode(_codec(response.charset), errors="replace")
    # Re-encoding replacement characters can grow the text; keep the byte bound.
    excerpt = text.encode("utf-8")[:MAX_RESPONSE_EXCERPT_BYTES].decode("utf-8", errors="ignore")
    return excerpt, cut


def _codec(charset: str | None) -> str:
    if charset:
        try:
            return codecs.lookup(charset).name
        except LookupError:
            pass
    return "utf-8"


def _headers_of_note(headers: Mapping[str, str]) -> dict[str, str]:
    return {name: headers[name] for name in HEADERS_OF_NOTE if name in headers}


def _elapsed_ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0


def _failure(started: float, detail: str) -> AttemptReport:
    return AttemptReport(latency_ms=_elapsed_ms(started), detail=detail)


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
