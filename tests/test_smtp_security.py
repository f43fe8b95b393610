"""SMTP security modes against a real aiosmtpd: STARTTLS, implicit TLS and AUTH.

trustme makes a throwaway CA; the relay trusts it through `email.smtp.ca_file`, just
as an operator with a private CA would.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from relay.channels.base import EmailMessageSpec, PermanentError, TransientError
from relay.channels.email import open_email_channel
from relay.config import EmailConfig, SmtpConfig
from tests.peers import free_port

SPEC = EmailMessageSpec(
    to="lucia@example.com",
    subject="Ficha OXXO",
    text="hola",
    html="<p>hola</p>",
    message_id="msg_tls",
)


@dataclass
class Server:
    port: int
    ca_file: Path
    received: list[bytes] = field(default_factory=list)
    logins: list[str] = field(default_factory=list)


class Handler:
    def __init__(self, server: Server) -> None:
        self.server = server

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        assert server.transport.get_extra_info("ssl_object") is not None, "sent in clear"
        self.server.received.append(envelope.content)
        return "250 OK"


def authenticator(logins: list[str]) -> Any:
    def check(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> Any:
        ok = isinstance(auth_data, LoginPassword) and auth_data.password == b"s3cret"
        if ok:
            logins.append(auth_data.login.decode())
        return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd answers 535

    return check


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
async def tls_server(
    ca: trustme.CA, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Server]:
    mode = request.param
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    server = Server(port=free_port(), ca_file=ca_file)
    kwargs: dict[str, Any] = {"authenticator": authenticator(server.logins)}
    if mode == "starttls":
        kwargs |= {"tls_context": context, "require_starttls": True}
    else:
        # The whole connection is TLS; aiosmtpd only counts STARTTLS as TLS for AUTH.
        kwargs |= {"ssl_context": context, "auth_require_tls": False}
    controller = Controller(Handler(server), hostname="127.0.0.1", port=server.port, **kwargs)
    await asyncio.to_thread(controller.start)
    try:
        yield server
    finally:
        await asyncio.to_thread(controller.stop)


def email_config(server: Server, security: str, password: str = "s3cret") -> EmailConfig:
    smtp = SmtpConfig.model_validate(
        {
            "host": "127.0.0.1",
            "port": server.port,
            "security": security,
            "username": "relay",
            "password": password,
            "ca_file": str(server.ca_file),
        }
    )
    return EmailConfig.model_validate(
        {"from": "relay@example.com", "transport": "smtp"}
    ).model_copy(update={"smtp": smtp})


@pytest.mark.parametrize(
    ("tls_server", "security"), [("starttls", "starttls"), ("tls", "tls")], indirect=["tls_server"]
)
async def test_encrypted_and_authenticated_send(
    tls_server: Server, security: str, tmp_path: Path
) -> None:
    config = email_config(tls_server, security)
    async with open_email_channel(config, base_dir=tmp_path, timeout_s=5) as channel:
        report = await channel.send(SPEC)
    assert report.status_code == 250
    assert tls_server.logins == ["relay"]
    assert len(tls_server.received) == 1


@pytest.mark.parametrize("tls_server", ["starttls"], indirect=True)
async def test_wrong_password_is_permanent(tls_server: Server, tmp_path: Path) -> None:
    config = email_config(tls_server, "starttls", password="wrong")
    async with open_email_channel(config, base_dir=tmp_path, timeout_s=5) as channel:
        with pytest.raises(PermanentError) as failure:
            await channel.send(SPEC)
    assert failure.value.report.status_code == 535
    assert tls_server.received == []


@pytest.mark.parametrize("tls_server", ["starttls"], indirect=True)
async def test_security_none_never_sends_in_clear_to_a_server_that_requires_tls(
    tls_server: Server, tmp_path: Path
) -> None:
    config = email_config(tls_server, "none")
    async with open_email_channel(config, base_dir=tmp_path, timeout_s=5) as channel:
        with pytest.raises((PermanentError, TransientError)):
            await channel.send(SPEC)
    assert tls_server.received == []


@pytest.mark.parametrize("tls_server", ["tls"], indirect=True)
async def test_untrusted_certificate_is_refused(tls_server: Server, tmp_path: Path) -> None:
    other_ca = tmp_path / "other.pem"
    trustme.CA().cert_pem.write_to_path(str(other_ca))
    config = email_config(tls_server, "tls")
    config = config.model_copy(
        update={"smtp": config.smtp.model_copy(update={"ca_file": str(other_ca)})}
    )
    async with open_email_channel(config, base_dir=tmp_path, timeout_s=5) as channel:
        with pytest.raises(TransientError):
            await channel.send(SPEC)
    assert tls_server.received == []
