"""Every channel the relay sends through, opened together behind one `send`.

A new channel (Telegram, WhatsApp) is a new message type in `relay.messages` and a
branch here; the engine only ever sees `relay.messages.Sender`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from relay.channels.email import EmailChannel, open_email_channel
from relay.channels.webhook import WebhookChannel, open_webhook_channel
from relay.config import Config
from relay.messages import Outgoing, WebhookMessage
from relay.outcomes import AttemptReport


@dataclass(frozen=True)
class Channels:
    """`relay.messages.Sender` over the email and webhook channels."""

    email: EmailChannel
    webhook: WebhookChannel

    async def send(self, message: Outgoing, *, now_s: float) -> AttemptReport:
        if isinstance(message, WebhookMessage):
            return await self.webhook.send(message, now_s=now_s)
        return await self.email.send(message)


@asynccontextmanager
async def open_channels(config: Config) -> AsyncIterator[Channels]:
    """Open each channel's resources (SMTP pool or maildir, the HTTP session) for the
    life of the block."""
    async with (
        open_email_channel(
            config.email, base_dir=config.base_dir, timeout_s=config.delivery.timeout_s
        ) as email,
        open_webhook_channel(
            timeout_s=config.delivery.timeout_s,
            concurrency=config.delivery.concurrency,
            allow_private_networks=config.delivery.allow_private_networks,
        ) as webhook,
    ):
        yield Channels(email, webhook)
