"""The relay's earlier ways of building what it sends, kept as the yardstick for the new ones.

The email channel once built each message with the stdlib `email` package; the relay now
writes the MIME text directly (`relay.mime_writer`). This builder stays here, unchanged,
for two uses: `bench/instructions.py` measures the new writer against it, and the tests
check that both give the same headers and parts when read back by the stdlib parser.
"""

from __future__ import annotations

import email.policy
import re
import secrets
from email.message import EmailMessage
from email.utils import formatdate

from relay.messages import EmailMessageSpec

# What `relay.channels.mime` folded into spaces in a subject.
_LINE_BREAKS = re.compile("[\r\n\v\f\x1c\x1d\x1e\x85\u2028\u2029]+")
_MSGID_UNSAFE = re.compile(r"[^A-Za-z0-9!#$%&'*+\-/?^_`{|}~.]")


def stdlib_message(spec: EmailMessageSpec, from_address: str) -> EmailMessage:
    """The multipart/alternative message as the stdlib builder made it."""
    message = EmailMessage(policy=email.policy.SMTP)
    message["From"] = from_address
    message["To"] = spec.to
    message["Subject"] = _LINE_BREAKS.sub(" ", spec.subject).strip()
    message["Date"] = formatdate(usegmt=True)
    local = _MSGID_UNSAFE.sub(
        lambda m: "".join(f"={b:02X}" for b in m[0].encode()), spec.message_id
    )
    message["Message-ID"] = f"<{local}@relay>"
    message.set_content(spec.text)
    message.add_alternative(spec.html, subtype="html")
    return message


def stdlib_message_bytes(spec: EmailMessageSpec, from_address: str) -> bytes:
    """The bytes the SMTP pool sent: CRLF line ends, as `EmailMessage.as_bytes` writes."""
    return stdlib_message(spec, from_address).as_bytes()


def token_hex_message_id() -> str:
    """The message id as it was made: `secrets.token_hex`, 128 random bits."""
    return f"msg_{secrets.token_hex(16)}"
