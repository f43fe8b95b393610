"""Email over SMTP through a few reused aiosmtplib connections.

A connection per message caps a local server at about 280 msg/s; eight reused
ones reach about 950 (DESIGN.md), so connections are pooled. A connection that
saw any error is closed and replaced on demand: its session state is unknown.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import aiosmtplib

from relay.channels.base import AttemptReport, EmailMessageSpec, PermanentError, TransientError
from relay.config import SmtpConfig
from relay.mime_writer import message_bytes, needs_smtputf8

SMTP_OK = 250
# "Service not available, closing channel": what a server says as it drops an idle client.
SMTP_CLOSING = 421


@dataclass(frozen=True)
class _Wire:
    """One message as it goes out: its bytes, its one recipient, its MAIL options."""

    content: bytes
    to: str
    mail_options: list[str]


class SmtpPool:
    """At most `pool_size` connections, each used by one send at a time."""

    def __init__(self, config: SmtpConfig, *, from_address: str, timeout_s: float) -> None:
        self._config = config
        self._from_address = from_address
        self._timeout_s = timeout_s
        self._slots = asyncio.Semaphore(config.pool_size)
        # Built once: loading a CA bundle per connection would cost more than the send.
        self._tls_context = (
            ssl.create_default_context(cafile=config.ca_file) if config.security != "none" else None
        )
        self._idle: list[aiosmtplib.SMTP] = []
        self._closed = False

    async def send(self, message: EmailMessageSpec) -> AttemptReport:
        """Send one message; return the server's 250 or raise a DeliveryError."""
        wire = _Wire(
            message_bytes(message, self._from_address),
            message.to,
            # An address beyond ASCII needs the server's SMTPUTF8; aiosmtplib refuses the
            # send (SMTPNotSupported, a permanent failure) when the server lacks it.
            ["SMTPUTF8"] if needs_smtputf8(self._from_address, message.to) else [],
        )
        async with self._slots:
            if self._closed:
                raise TransientError("email channel is closed")
            started = time.perf_counter()
            try:
                client, reply = await self._deliver(wire)
            except (aiosmtplib.SMTPException, OSError, ValueError) as exc:
                raise _as_delivery_error(exc, _elapsed_ms(started)) from None
            if self._closed:
                client.close()
            else:
                self._idle.append(client)
            return AttemptReport(
                status_code=SMTP_OK, latency_ms=_elapsed_ms(started), detail=f"{SMTP_OK} {reply}"
            )

    async def close(self) -> None:
        """Say QUIT on every idle connection; a server that is gone is no error here."""
        self._closed = True
        idle, self._idle = self._idle, []
        for client in idle:
            with contextlib.suppress(aiosmtplib.SMTPException, OSError, TimeoutError):
                await client.quit()
            client.close()

    def _take_idle(self) -> aiosmtplib.SMTP | None:
        while self._idle:
            client = self._idle.pop()
            if client.is_connected:
                return client
            client.close()  # the server hung up while it sat idle
        return None

    async def _connect(self) -> aiosmtplib.SMTP:
        config = self._config
        client = aiosmtplib.SMTP(
            hostname=config.host,
            port=config.port,
            username=config.username or None,
            password=config.password or None,
            timeout=self._timeout_s,
            use_tls=config.security == "tls",
            # False rather than None: "none" must not upgrade opportunistically either.
            start_tls=config.security == "starttls",
            tls_context=self._tls_context,
        )
        try:
            await client.connect()
        except BaseException:
            client.close()
            raise
        return client

    async def _deliver(self, wire: _Wire) -> tuple[aiosmtplib.SMTP, str]:
        """Send on an idle connection or a new one; close whichever fails."""
        client = self._take_idle()
        if client is not None:
            try:
                return client, await self._send_on(client, wire)
            except aiosmtplib.SMTPException as exc:
                client.close()
                if not _server_dropped(exc):
                    raise
                # The server closed a connection that sat idle: try once on a fresh one.
            except BaseException:
                client.close()
                raise
        client = await self._connect()
        try:
            return client, await self._send_on(client, wire)
        except BaseException:
            client.close()
            raise

    async def _send_on(self, client: aiosmtplib.SMTP, wire: _Wire) -> str:
        _errors, reply = await client.sendmail(
            self._from_address, [wire.to], wire.content, mail_options=wire.mail_options
        )
        return reply


@asynccontextmanager
async def open_smtp_pool(
    config: SmtpConfig, *, from_address: str, timeout_s: float
) -> AsyncIterator[SmtpPool]:
    """Own the pool's connections for the life of the block."""
    pool = SmtpPool(config, from_address=from_address, timeout_s=timeout_s)
    try:
        yield pool
    finally:
        await pool.close()


def _server_dropped(exc: aiosmtplib.SMTPException) -> bool:
    if isinstance(exc, aiosmtplib.SMTPServerDisconnected):
        return True
    return isinstance(exc, aiosmtplib.SMTPResponseException) and exc.code == SMTP_CLOSING


def _as_delivery_error(exc: Exception, latency_ms: float) -> PermanentError | TransientError:
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused) and exc.recipients:
        exc = exc.recipients[0]  # one recipient per message: its code is the verdict
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        report = AttemptReport(
            status_code=exc.code, latency_ms=latency_ms, detail=f"{exc.code} {exc.message}"
        )
        reason = f"SMTP {exc.code} {exc.message}"
        if 500 <= exc.code < 600:
            return PermanentError(reason, report)
        return TransientError(reason, report)
    if isinstance(exc, TimeoutError):
        reason = f"SMTP server did not answer in time: {exc}"
    elif isinstance(exc, ssl.SSLError):
        # Checked before ValueError, which ssl's verify error also is: a certificate is
        # the server's to fix, so it is retried, as the same fault on a webhook is.
        reason = f"SMTP TLS failed: {exc}"
    elif isinstance(exc, aiosmtplib.SMTPNotSupported | ValueError):
        # An address unsafe on the command line, a non-ASCII one without SMTPUTF8, or a
        # server lacking the STARTTLS the config demands: the same on every retry.
        reason = f"SMTP server cannot take this message: {exc}"
        return PermanentError(reason, AttemptReport(latency_ms=latency_ms, detail=reason))
    else:
        reason = f"SMTP connection failed: {type(exc).__name__}: {exc}"
    return TransientError(reason, AttemptReport(latency_ms=latency_ms, detail=reason))


def _elapsed_ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0
