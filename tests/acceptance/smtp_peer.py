"""The SMTP peer of the acceptance suite: aiosmtpd, scripted per recipient, in its own
process (`python -m tests.acceptance.peers smtp`). Modes: plain, STARTTLS offered then
refused or with a certificate no one trusts, and AUTH that refuses every login.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import trustme
from aiohttp import web
from aiosmtpd.smtp import SMTP, AuthResult

from tests.acceptance.peers import CONTROL, until_terminated, write_ready


@dataclass
class Mail:
    seq: int
    rcpt_tos: list[str]
    message_id: str
    subject: str
    header_names: list[str]
    arrived: float
    answer: str


@dataclass
class SmtpScript:
    replies: dict[str, deque[str]] = field(default_factory=dict)  # per recipient
    delay_s: float = 0.0


class SmtpPeer:
    """An aiosmtpd handler: DATA replies are scripted per recipient; 421 closes the channel."""

    def __init__(self) -> None:
        self.mails: list[Mail] = []
        self.script = SmtpScript()

    async def handle_DATA(self, server: SMTP, session: Any, envelope: Any) -> str:
        if self.script.delay_s:
            await asyncio.sleep(self.script.delay_s)
        rcpt = envelope.rcpt_tos[0] if envelope.rcpt_tos else ""
        queue = self.script.replies.get(rcpt)
        answer = queue.popleft() if queue else "250 OK"
        headers, names = _headers_of(envelope.content)
        self.mails.append(
            Mail(
                seq=len(self.mails),
                rcpt_tos=list(envelope.rcpt_tos),
                message_id=headers.get("message-id", ""),
                subject=headers.get("subject", ""),
                header_names=names,
                arrived=time.monotonic(),
                answer=answer,
            )
        )
        if answer.startswith("421"):
            transport = server.transport
            if transport is not None:
                # 421 means "closing the channel": close right after the reply goes out.
                asyncio.get_running_loop().call_soon(transport.close)
        return answer

    async def control_script(self, request: web.Request) -> web.Response:
        data = await request.json()
        for rcpt, replies in data.get("replies", {}).items():
            self.script.replies.setdefault(rcpt, deque()).extend(replies)
        if "delay_s" in data:
            self.script.delay_s = float(data["delay_s"])
        return web.json_response({"ok": True})

    async def control_mails(self, request: web.Request) -> web.Response:
        return web.json_response([asdict(m) for m in self.mails])


def _headers_of(content: bytes) -> tuple[dict[str, str], list[str]]:
    """The first value of each header, and every header name in order (repeats kept)."""
    head = content.split(b"\r\n\r\n", 1)[0].decode("utf-8", errors="replace")
    headers: dict[str, str] = {}
    names: list[str] = []
    for line in head.split("\r\n"):
        name, sep, value = line.partition(":")
        if sep and not line[:1].isspace():
            names.append(name.strip().lower())
            headers.setdefault(name.strip().lower(), value.strip())
    return headers, names


class BrokenStartTls(SMTP):
    """Offers STARTTLS in EHLO, then refuses it."""

    async def smtp_STARTTLS(self, arg: str) -> None:
        await self.push("454 4.7.0 TLS not available due to temporary reason")


def _refuse_every_login(*_: Any) -> AuthResult:
    return AuthResult(success=False, handled=False)  # aiosmtpd answers 535


async def run_smtp(ready_file: Path, port: int, mode: str) -> None:
    peer = SmtpPeer()
    loop = asyncio.get_running_loop()
    tls_context = None
    if mode in ("starttls-refused", "starttls-untrusted"):
        tls_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        trustme.CA().issue_cert("127.0.0.1", "localhost").configure_cert(tls_context)
    protocol = BrokenStartTls if mode == "starttls-refused" else SMTP

    def factory() -> SMTP:
        return protocol(
            peer,
            hostname="peer.test",
            tls_context=tls_context,
            authenticator=_refuse_every_login if mode == "auth-refused" else None,
            auth_require_tls=False,
            loop=loop,
        )

    server = await loop.create_server(factory, "127.0.0.1", port)
    app = web.Application()
    app.router.add_post(f"{CONTROL}/script", peer.control_script)
    app.router.add_get(f"{CONTROL}/mails", peer.control_mails)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    smtp_port = server.sockets[0].getsockname()[1]
    write_ready(ready_file, {"smtp": smtp_port, "control": runner.addresses[0][1]})
    try:
        await until_terminated()
    finally:
        server.close()
        await runner.cleanup()
