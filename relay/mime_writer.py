"""The bytes of one email: a multipart/alternative text + HTML message, written directly.

Building it with the stdlib `email` package cost about 11.7 million instructions a
message, more than the SMTP exchange that sends it; writing the same MIME text here
costs a small fraction of that (README, "Performance"). What is written is held to the
stdlib's reading of it: tests/test_mime_writer.py parses both this and the stdlib
builder's output (bench/reference.py) and compares headers and parts.

How it stays safe and standard:
- Header values come from data (a subject names the product and the buyer), so every
  line break in one is folded to a space, and a From or To with one is refused: no value
  can start a header of its own.
- A subject that is not short printable ASCII, and a display name beyond ASCII, are
  written as RFC 2047 encoded words, one a line, each line within 76 characters. With
  an address beyond ASCII the message needs SMTPUTF8 anyway, and From and To are
  written as UTF-8 (RFC 6532).
- Both parts are quoted-printable: 7-bit clean, lines of at most 76 characters, CRLF.
- The boundary starts with `=_`, which quoted-printable can never produce (its `=` is
  always followed by a hex digit or a line end), so no body can contain it.
"""

from __future__ import annotations

import binascii
import re
from base64 import b64encode
from email.utils import formatdate, parseaddr

from relay.messages import EmailMessageSpec
from relay.outcomes import PermanentError

# Every character str.splitlines() breaks on: some MIME tooling treats each as a line end,
# so any of them in a header value could start a forged header.
_LINE_BREAKS = re.compile("[\r\n\v\f\x1c\x1d\x1e\x85\u2028\u2029]+")
# RFC 5322 atext plus ".", minus "=" which escapes everything else.
_MSGID_UNSAFE = re.compile(r"[^A-Za-z0-9!#$%&'*+\-/?^_`{|}~.]")
# Printable ASCII and spaces: a header value made only of these may be written as it is,
# unless it looks like an encoded word ("=?"), which a reader would decode.
_PLAIN_HEADER = re.compile(r"[ -~]*")
# `Name <address>`, the way an operator writes a From: the name is whatever precedes.
_NAMED_ADDRESS = re.compile(r"(?P<name>[^<>]*?)\s*<(?P<address>[\x21-\x7e]+)>\s*")
MESSAGE_ID_DOMAIN = "relay"
# RFC 5322 asks for lines of at most 78 characters; a plain header longer than that is
# written as encoded words, which fold at any character.
_FOLD_AT = 78
# Bytes of UTF-8 per encoded word: `=?utf-8?b?` + 52 base64 characters + `?=` is 64, so
# the first line, `Subject: ` and a word, stays within 76 (RFC 2047 §2).
_WORD_BYTES = 39
_ONE_WORD_NAME_CHARS = 160  # 640 bytes of UTF-8 at most: a line of about 870
_BOUNDARY = "=_relay_alternative"
_PART_HEADERS = (
    'Content-Type: text/{}; charset="utf-8"\nContent-Transfer-Encoding: quoted-printable\n'
)


def message_bytes(spec: EmailMessageSpec, from_address: str, *, linesep: str = "\r\n") -> bytes:
    """The whole message, headers and both parts, with `linesep` line ends.

    Raises `PermanentError` for a From or To with a line break.
    """
    _require_single_line("from address", from_address)
    _require_single_line("recipient", spec.to)
    # An address (not a display name) beyond ASCII goes out under SMTPUTF8, where headers
    # are UTF-8 as they are; a display name beyond ASCII alone is encoded.
    utf8 = needs_smtputf8(from_address, spec.to)
    # A subject is prose: fold hostile line breaks into spaces rather than fail the send.
    subject = _LINE_BREAKS.sub(" ", spec.subject).strip()
    head = (
        f"From: {_address(from_address, utf8)}\n"
        f"To: {_address(spec.to, utf8)}\n"
        f"Subject: {_unstructured(subject)}\n"
        f"Date: {formatdate(usegmt=True)}\n"
        f"Message-ID: {message_id_header(spec.message_id)}\n"
        "MIME-Version: 1.0\n"
        f'Content-Type: multipart/alternative; boundary="{_BOUNDARY}"\n'
        "\n"
    )
    # The line end before a boundary belongs to the boundary (RFC 2046 §5.1.1), not to
    # the part, whose text ends with a line end of its own.
    text = (
        f"{head}--{_BOUNDARY}\n{_PART_HEADERS.format('plain')}\n{_quoted_printable(spec.text)}"
        f"\n--{_BOUNDARY}\n{_PART_HEADERS.format('html')}\n{_quoted_printable(spec.html)}"
        f"\n--{_BOUNDARY}--\n"
    )
    if linesep != "\n":
        text = text.replace("\n", linesep)
    # Only the headers can hold anything but ASCII (UTF-8 addresses under SMTPUTF8).
    return text.encode("utf-8")


def needs_smtputf8(from_address: str, to: str) -> bool:
    """Whether an address is not ASCII, so the message must go out under SMTPUTF8."""
    if from_address.isascii() and to.isascii():
        return False  # the usual case, without parsing
    return not (_mailbox(from_address).isascii() and _mailbox(to).isascii())


def _mailbox(value: str) -> str:
    # The address SMTP's MAIL FROM and RCPT TO carry, found as aiosmtplib finds it.
    return parseaddr(value)[1] or value.strip()


def message_id_header(message_id: str) -> str:
    """`<id@relay>`, the same for the same id, with characters a msg-id forbids escaped."""
    local = _MSGID_UNSAFE.sub(lambda m: "".join(f"={b:02X}" for b in m[0].encode()), message_id)
    return f"<{local}@{MESSAGE_ID_DOMAIN}>"


def _address(value: str, utf8: bool) -> str:
    """A From or To as written: as given, or with its display name in encoded words."""
    if utf8 or value.isascii():
        return value
    named = _NAMED_ADDRESS.fullmatch(value)
    if named is not None:
        name, address = named["name"].strip(), named["address"]
    else:  # `relay@example.com (José)`: the older form, as a mail reader takes it apart
        name, address = parseaddr(value)
    if len(name) > 1 and name[0] == name[-1] == '"':
        name = name[1:-1]  # the quotes were for the reader; an encoded word needs none
    if not name or not address.isascii():
        return value  # nothing to encode: the caller's value, as given
    # One word, even past RFC 2047's 75 characters: the stdlib's reader (like others) puts
    # a space between the encoded words of a name. A name is short; a name that is not
    # is split, so that no line passes 998.
    one_word = len(name) <= _ONE_WORD_NAME_CHARS
    words = _word(name.encode("utf-8")) if one_word else _encoded_words(name)
    return f"{words} <{address}>"


def _unstructured(value: str) -> str:
    return value if _is_plain(value) else _encoded_words(value)


def _is_plain(value: str) -> bool:
    fits = len("Subject: ") + len(value) <= _FOLD_AT
    return fits and _PLAIN_HEADER.fullmatch(value) is not None and "=?" not in value


def _encoded_words(value: str) -> str:
    """RFC 2047 base64 words, whole characters each, one a line after the first."""
    data = value.encode("utf-8")
    words = []
    start = 0
    while start < len(data):
        end = min(start + _WORD_BYTES, len(data))
        while end < len(data) and data[end] & 0xC0 == 0x80:
            end -= 1  # never split a character: back off its continuation bytes
        words.append(_word(data[start:end]))
        start = end
    # Whitespace between two encoded words is not part of the text (RFC 2047 §6.2).
    return "\n ".join(words)


def _word(data: bytes) -> str:
    return f"=?utf-8?b?{b64encode(data).decode('ascii')}?="


def _quoted_printable(body: str) -> str:
    """The body as the stdlib writes it: every line end one "\n", one at the end."""
    lines = body.encode("utf-8").splitlines()
    data = b"\n".join(lines) + b"\n"
    return binascii.b2a_qp(data, quotetabs=False, istext=True, header=False).decode("ascii")


def _require_single_line(what: str, value: str) -> None:
    if _LINE_BREAKS.search(value):
        raise PermanentError(f"{what} contains a line break; refusing to build the message")
