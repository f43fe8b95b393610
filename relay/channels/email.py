"""The email channel: one `send` over SMTP (pooled) or into a maildir, chosen by config."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Protocol

from relay.channels.base import AttemptReport, EmailMessageSpec
from relay.channels.maildir import Maildir
from relay.channels.smtp_pool import open_smtp_pool
from relay.config import EmailConfig
from relay.mime_writer import message_bytes

__all__ = ["EmailChannel", "message_bytes", "open_email_channel"]


class EmailChannel(Protocol):
    """Sends one rendered email; raises TransientError or PermanentError on failure."""

    async def send(self, message: EmailMessageSpec) -> AttemptReport: ...


@asynccontextmanager
async def open_email_channel(
    config: EmailConfig, *, base_dir: Path, timeout_s: float
) -> AsyncIterator[EmailChannel]:
    """Open the configured transport for the life of the block (SMTP pool or maildir)."""
    if config.transport == "maildir":
        root = Path(config.maildir)
        if not root.is_absolute():
            root = base_dir / root
        yield Maildir(root, from_address=config.from_address)
        return
    smtp = config.smtp
    if smtp.ca_file and not Path(smtp.ca_file).is_absolute():
        smtp = smtp.model_copy(update={"ca_file": str(base_dir / smtp.ca_file)})
    async with open_smtp_pool(smtp, from_address=config.from_address, timeout_s=timeout_s) as pool:
        yield pool
