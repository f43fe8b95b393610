"""The email channel against a real aiosmtpd server on loopback, and a real maildir."""

from __future__ import annotations

import asyncio
import email
import email.policy
import socket
from collections.abc import AsyncIterator, Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from relay.channels.base import EmailMessageSpec, PermanentError, TransientError
from relay.channels.email import EmailChannel, message_bytes, open_email_channel
from relay.channels.maildir import file_name
from relay.config import EmailConfig, SmtpConfig

FROM = "relay@example.com"
TIMEOUT_S = 2.0


class Recorder:
    """An SMTP server's handler that keeps what it received and can be told to refuse."""

    def __init__(self) -> None:
        self.contents: list[bytes] = []
        self.recipients: list[list[str]] = []
        self.peers: set[Any] = set()
        self.ehlo_count = 0
        self.rcpt_reply: str | None = None
        self.data_reply: str | None = None
        self.closing_peers: set[Any] = set()  # answer 421 to MAIL on these connections

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        self.ehlo_count += 1
        session.host_name = hostname
        return responses

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if session.peer in self.closing_peers:
            return "421 closing idle connection"
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if self.rcpt_reply:
            return self.rcpt_reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.data_reply:
            return self.data_reply
        self.contents.append(envelope.content)
        self.recipients.append(list(envelope.rcpt_tos))
        self.peers.add(session.peer)
        return "250 OK queued as test"


class _HangingUpController(Controller):
    """A Controller that can close its server-side connections before it stops.

    Controller.stop() stops its loop and cancels the sessions without waiting for
    their sockets to close. Hanging up first closes them cleanly, as a real
    server restart drops its clients, so the client sees a closed connection.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sessions: list[Any] = []

    def factory(self) -> Any:
        session = super().factory()  # type: ignore[no-untyped-call]
        self.sessions.append(session)
        return session

    def hang_up(self) -> None:
        async def close_all() -> None:
            for session in self.sessions:
                if session.transport is not None:
                    session.transport.close()
            await asyncio.sleep(0)  # let the transports finish closing

        asyncio.run_coroutine_threadsafe(close_all(), self.loop).result(timeout=5)


class SmtpServer:
    """An aiosmtpd Controller (its own thread) that can be stopped mid-test."""

    def __init__(self, recorder: Recorder, port: int) -> None:
        self.recorder = recorder
        self.port = port
        self._controller: _HangingUpController | None = None

    def start(self) -> None:
        self._controller = _HangingUpController(self.recorder, hostname="127.0.0.1", port=self.port)
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.hang_up()
            self._controller.stop()
            self._controller = None


def _free_port() -> int:
    # aiosmtpd 1.4 needs an explicit port, so borrow one the OS picks.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def smtp_server(recorder: Recorder) -> Iterator[SmtpServer]:
    server = SmtpServer(recorder, _free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _smtp_config(port: int, pool_size: int = 2) -> EmailConfig:
    return EmailConfig(
        from_address=FROM,
        transport="smtp",
        smtp=SmtpConfig(host="127.0.0.1", port=port, security="none", pool_size=pool_size),
    )


@pytest.fixture
async def smtp_channel(smtp_server: SmtpServer, tmp_path: Path) -> AsyncIterator[EmailChannel]:
    async with open_email_channel(
        _smtp_config(smtp_server.port), base_dir=tmp_path, timeout_s=TIMEOUT_S
    ) as channel:
        yield channel


def _spec(message_id: str = "dlv_1", **changes: str) -> EmailMessageSpec:
    fields = {
        "to": "affiliate@example.com",
        "subject": "Boleto for Curso de Python",
        "text": "Pague o boleto: 1234 5678\nObrigado",
        "html": "<p>Pague o <b>boleto</b>: 1234 5678</p>",
        "message_id": message_id,
    }
    fields.update(changes)
    return EmailMessageSpec(**fields)


def _parse(raw: bytes) -> EmailMessage:
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def _lines(text: str) -> list[str]:
    # An 8bit part keeps the wire's CRLF after parsing; compare line by line.
    return text.splitlines()


def _assert_alternative(parsed: EmailMessage, spec: EmailMessageSpec) -> None:
    assert parsed.get_content_type() == "multipart/alternative"
    text = parsed.get_body(("plain",))
    html = parsed.get_body(("html",))
    assert text is not None
    assert html is not None
    assert _lines(text.get_content()) == _lines(spec.text)
    assert _lines(html.get_content()) == _lines(spec.html)
    assert parsed["Message-ID"] == f"<{spec.message_id}@relay>"
    assert parsed["To"] == spec.to
    assert parsed["From"] == FROM
    assert parsed["Subject"] == spec.subject
    assert parsed["Date"]


async def test_smtp_send_delivers_a_multipart_message(
    smtp_channel: EmailChannel, recorder: Recorder
) -> None:
    spec = _spec(subject="Boleto — Curso de Python ç")

    report = await smtp_channel.send(spec)

    assert report.status_code == 250
    assert report.detail == "250 OK queued as test"
    assert report.latency_ms > 0
    [raw] = recorder.contents
    _assert_alternative(_parse(raw), spec)
    assert recorder.recipients == [["affiliate@example.com"]]


async def test_a_resend_of_the_same_spec_keeps_the_message_id(
    smtp_channel: EmailChannel, recorder: Recorder
) -> None:
    await smtp_channel.send(_spec("dlv_same"))
    await smtp_channel.send(_spec("dlv_same"))

    ids = [_parse(raw)["Message-ID"] for raw in recorder.contents]
    assert ids == ["<dlv_same@relay>", "<dlv_same@relay>"]


async def test_pool_reuses_its_connections(smtp_channel: EmailChannel, recorder: Recorder) -> None:
    specs = [_spec(f"dlv_{n}") for n in range(20)]

    reports = await asyncio.gather(*(smtp_channel.send(spec) for spec in specs))

    assert all(report.status_code == 250 for report in reports)
    assert len(recorder.contents) == 20
    assert 1 <= len(recorder.peers) <= 2
    assert recorder.ehlo_count <= 2


async def test_rcpt_4xx_is_transient(smtp_channel: EmailChannel, recorder: Recorder) -> None:
    recorder.rcpt_reply = "451 try later"

    with pytest.raises(TransientError) as caught:
        await smtp_channel.send(_spec())

    assert caught.value.report.status_code == 451
    assert "try later" in caught.value.report.detail


async def test_data_4xx_is_transient(smtp_channel: EmailChannel, recorder: Recorder) -> None:
    recorder.data_reply = "451 try later"

    with pytest.raises(TransientError) as caught:
        await smtp_channel.send(_spec())

    assert caught.value.report.status_code == 451


async def test_rcpt_5xx_is_permanent_with_the_code(
    smtp_channel: EmailChannel, recorder: Recorder
) -> None:
    recorder.rcpt_reply = "550 no such user"

    with pytest.raises(PermanentError) as caught:
        await smtp_channel.send(_spec())

    assert caught.value.report.status_code == 550
    assert caught.value.report.detail == "550 no such user"
    assert not caught.value.disable_destination


async def test_data_5xx_is_permanent(smtp_channel: EmailChannel, recorder: Recorder) -> None:
    recorder.data_reply = "554 rejected"

    with pytest.raises(PermanentError) as caught:
        await smtp_channel.send(_spec())

    assert caught.value.report.status_code == 554


async def test_the_pool_recovers_after_an_error(
    smtp_channel: EmailChannel, recorder: Recorder
) -> None:
    recorder.rcpt_reply = "451 try later"
    with pytest.raises(TransientError):
        await smtp_channel.send(_spec("dlv_a"))
    recorder.rcpt_reply = None

    report = await smtp_channel.send(_spec("dlv_b"))

    assert report.status_code == 250
    assert len(recorder.contents) == 1


async def test_an_idle_connection_the_server_closed_is_retried_once(
    smtp_channel: EmailChannel, recorder: Recorder
) -> None:
    await smtp_channel.send(_spec("dlv_first"))
    recorder.closing_peers = set(recorder.peers)

    report = await smtp_channel.send(_spec("dlv_second"))

    assert report.status_code == 250
    assert len(recorder.contents) == 2
    assert len(recorder.peers) == 2  # the second went over a fresh connection


@pytest.mark.parametrize("noticed", [False, True], ids=["unnoticed", "noticed"])
async def test_a_restarted_server_is_reached_on_a_fresh_connection(
    smtp_channel: EmailChannel, smtp_server: SmtpServer, recorder: Recorder, noticed: bool
) -> None:
    await smtp_channel.send(_spec("dlv_before"))
    smtp_server.stop()
    smtp_server.start()
    if noticed:
        await asyncio.sleep(0.05)  # the client's loop sees the hang-up before the next send

    report = await smtp_channel.send(_spec("dlv_after"))

    assert report.status_code == 250
    assert len(recorder.contents) == 2


async def test_a_stopped_server_is_transient(
    smtp_channel: EmailChannel, smtp_server: SmtpServer
) -> None:
    smtp_server.stop()

    with pytest.raises(TransientError) as caught:
        await smtp_channel.send(_spec())

    assert caught.value.reason.startswith("SMTP connection failed")
    assert caught.value.report.status_code is None


async def test_a_recipient_with_a_line_break_is_refused(
    smtp_channel: EmailChannel, recorder: Recorder
) -> None:
    with pytest.raises(PermanentError, match="line break"):
        await smtp_channel.send(_spec(to="a@example.com\r\nBcc: evil@example.com"))

    assert recorder.contents == []


async def test_an_error_on_a_reused_connection_is_not_retried(
    smtp_channel: EmailChannel, recorder: Recorder
) -> None:
    await smtp_channel.send(_spec("dlv_ok"))
    recorder.rcpt_reply = "550 no such user"

    with pytest.raises(PermanentError) as caught:
        await smtp_channel.send(_spec("dlv_refused"))

    assert caught.value.report.status_code == 550
    assert len(recorder.peers) == 1


async def test_an_address_unsafe_on_the_smtp_command_line_is_permanent(
    smtp_channel: EmailChannel, recorder: Recorder
) -> None:
    with pytest.raises(PermanentError, match="cannot take this message"):
        await smtp_channel.send(_spec(to="a b@example.com"))

    assert recorder.contents == []


async def test_a_silent_server_times_out_as_transient(tmp_path: Path) -> None:
    writers: list[asyncio.StreamWriter] = []

    async def say_nothing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        await reader.read()  # no greeting: wait until the client gives up and hangs up

    silent = await asyncio.start_server(say_nothing, "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    try:
        async with open_email_channel(
            _smtp_config(port), base_dir=tmp_path, timeout_s=0.2
        ) as channel:
            with pytest.raises(TransientError, match="did not answer in time"):
                await channel.send(_spec())
    finally:
        silent.close()
        for writer in writers:
            writer.close()
            await writer.wait_closed()
        await silent.wait_closed()


async def test_a_closed_channel_refuses_to_send(smtp_server: SmtpServer, tmp_path: Path) -> None:
    async with open_email_channel(
        _smtp_config(smtp_server.port), base_dir=tmp_path, timeout_s=TIMEOUT_S
    ) as channel:
        await channel.send(_spec("dlv_open"))

    with pytest.raises(TransientError, match="closed"):
        await channel.send(_spec("dlv_late"))


def test_a_hostile_subject_cannot_add_headers() -> None:
    spec = _spec(subject="Boleto\r\nBcc: evil@example.com\r\n\r\nforged body\u2028X-Evil: 1")

    parsed = _parse(message_bytes(spec, FROM))

    assert len(parsed.get_all("Subject", [])) == 1
    assert "Bcc" not in parsed
    assert "X-Evil" not in parsed
    assert parsed["Subject"] == "Boleto Bcc: evil@example.com forged body X-Evil: 1"
    _assert_alternative(parsed, _spec(subject=parsed["Subject"]))


def test_message_id_is_stable_and_escapes_unsafe_characters() -> None:
    first = _parse(message_bytes(_spec("dlv 1<x>@y"), FROM))
    second = _parse(message_bytes(_spec("dlv 1<x>@y"), FROM))

    assert first["Message-ID"] == second["Message-ID"] == "<dlv=201=3Cx=3E=40y@relay>"


def _maildir_config(maildir: str) -> EmailConfig:
    return EmailConfig(from_address=FROM, transport="maildir", maildir=maildir)


async def test_maildir_writes_one_file_per_message_atomically(tmp_path: Path) -> None:
    spec = _spec("dlv_1")
    async with open_email_channel(
        _maildir_config("var/mail"), base_dir=tmp_path, timeout_s=TIMEOUT_S
    ) as channel:
        first = await channel.send(spec)
        second = await channel.send(spec)

    root = tmp_path / "var" / "mail"
    written = list((root / "new").iterdir())
    assert [path.name for path in written] == ["dlv_1.eml"]
    assert list((root / "tmp").iterdir()) == []
    assert (root / "cur").is_dir()
    assert first.detail == second.detail == f"written to {root / 'new' / 'dlv_1.eml'}"
    parsed = _parse(written[0].read_bytes())
    _assert_alternative(parsed, spec)


async def test_maildir_takes_an_absolute_path(tmp_path: Path) -> None:
    root = tmp_path / "elsewhere"
    async with open_email_channel(
        _maildir_config(str(root)), base_dir=tmp_path / "unused", timeout_s=TIMEOUT_S
    ) as channel:
        await channel.send(_spec("dlv_abs"))

    assert (root / "new" / "dlv_abs.eml").is_file()


async def test_maildir_write_failure_is_transient(tmp_path: Path) -> None:
    (tmp_path / "blocker").write_text("a file where the maildir should be")
    async with open_email_channel(
        _maildir_config("blocker"), base_dir=tmp_path, timeout_s=TIMEOUT_S
    ) as channel:
        with pytest.raises(TransientError, match="cannot write to maildir"):
            await channel.send(_spec())


def test_maildir_file_names_are_safe_and_distinct() -> None:
    assert file_name("dlv_1") == "dlv_1.eml"
    assert file_name("../etc/passwd") == "%2E.%2Fetc%2Fpasswd.eml"
    assert file_name("a/b") != file_name("a_b")
    long_name = file_name("x" * 1000)
    assert len(long_name) <= 160
    assert long_name != file_name("x" * 999)
