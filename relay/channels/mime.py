"""Turn an `EmailMessageSpec` into a MIME message no user data can add headers to.

Lives apart from `email.py` so both transports (`smtp_pool`, `maildir`) can import
it without an import cycle; `relay.channels.email` re-exports `build_message`.
"""

from __future__ import annotations

import email.policy
import re
from email.message import EmailMessage
from email.utils import formatdate

from relay.channels.base import EmailMessageSpec, PermanentError

# Every character str.splitlines() breaks on: some MIME tooling treats each as a line end,
# so any of them in a header value could start a forged header.
_LINE_BREAKS = re.compile("[\r\n\v\f\x1c\x1d\x1e\x85\u2028\u2029]+")
# RFC 5322 atext plus ".", minus "=" which escapes everything else.
_MSGID_UNSAFE = re.compile(r"[^A-Za-z0-9!#$%&'*+\-/?^_`{|}~.]")
MESSAGE_ID_DOMAIN = "relay"


def build_message(spec: EmailMessageSpec, from_address: str) -> EmailMessage:
    """A multipart/alternative text + HTML message with a Message-ID stable across retries."""
    _require_single_line("from address", from_address)
    _require_single_line("recipient", spec.to)
    message = EmailMessage(policy=email.policy.SMTP)
    message["From"] = from_address
    message["To"] = spec.to
    # A subject is prose: fold hostile line breaks into spaces rather than fail the send.
    message["Subject"] = _LINE_BREAKS.sub(" ", spec.subject).strip()
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = message_id_header(spec.message_id)
    message.set_content(spec.text)
    message.add_alternative(spec.html, subtype="html")
    return message


def message_id_header(message_id: str) -> str:
    """`<id@relay>`, the same for the same id, with characters a msg-id forbids escaped."""
    local = _MSGID_UNSAFE.sub(lambda m: "".join(f"={b:02X}" for b in m[0].encode()), message_id)
    return f"<{local}@{MESSAGE_ID_DOMAIN}>"


def _require_single_line(what: str, value: str) -> None:
    if _LINE_BREAKS.search(value):
        raise PermanentError(f"{what} contains a line break; refusing to build the message")
