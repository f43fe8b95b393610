"""The direct MIME writer reads back, through the stdlib parser, as the stdlib builder did.

`relay.mime_writer` replaced a message built with the stdlib `email` package (kept in
bench/reference.py). Both are parsed with `email.policy.default` and compared: the
headers a reader sees and each part's type and text. Also: CRLF only, no line over 998
characters, 7-bit unless an address needs SMTPUTF8, and no data can add a header.
"""

from __future__ import annotations

import email
import email.policy
import re
from email.message import EmailMessage
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from bench.reference import stdlib_message_bytes
from relay.formatting import LOCALES
from relay.messages import EmailMessageSpec
from relay.mime_writer import message_bytes, message_id_header, needs_smtputf8
from relay.outcomes import PermanentError
from relay.records import Notice
from relay.render import Notification, Templates
from tests.hotmart_bodies import FIXTURE_FILES, fixture_event

FROM = "Relay <relay@example.com>"
SETTINGS = settings(
    max_examples=200,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
# Any text but lone surrogates, which no UTF-8 message can carry.
any_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=300)
long_lines = st.text(st.characters(exclude_categories=["Cs"]), min_size=900, max_size=2000)
# A subject is at most 998 characters (relay.sandbox); the stdlib builder is slow on long ones.
long_subjects = st.text(st.characters(exclude_categories=["Cs"]), min_size=100, max_size=998)
# People's and companies' names: letters of any script, digits, spaces, a little
# punctuation, and now and then a line break that must be refused.
names = st.text(
    st.characters(categories=["L", "M", "N", "Zs"], include_characters=".-',&\r\n\u2028"),
    max_size=80,
)
LINE_BREAKS = re.compile("[\r\n\v\f\x1c\x1d\x1e\x85\u2028\u2029]+")
# What a reader sees of a message, so two messages can be compared.
Reading = tuple[dict[str, str], list[tuple[str, str]]]


def parse(raw: bytes) -> EmailMessage:
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def reading(raw: bytes) -> Reading:
    parsed = parse(raw)
    headers = {name: str(parsed[name]) for name in ("From", "To", "Subject", "Message-ID")}
    headers["MIME-Version"] = str(parsed["MIME-Version"])
    parts = [(parsed.get_content_type(), "")]
    for part in parsed.iter_parts():
        assert isinstance(part, EmailMessage)
        # An 8bit part (the stdlib's choice for short lines) keeps the wire's CRLF when
        # parsed, a quoted-printable one does not: the lines are what is compared.
        parts.append((part.get_content_type(), part.get_content().replace("\r\n", "\n")))
    return headers, parts


def assert_reads_as_before(
    spec: EmailMessageSpec, from_address: str = FROM, *, subject_as_before: bool = False
) -> bytes:
    """The writer's message reads as the spec says, and as the stdlib builder's did.

    Where the stdlib builder was wrong, the spec wins: it read a long ASCII subject back
    with a leading space, let a subject's `=?utf-8?q?...?=` text be decoded, and folded
    runs of spaces in long subjects. `subject_as_before`: compare subjects too, as on
    the subjects the templates render.
    """
    raw = message_bytes(spec, from_address)
    headers, parts = reading(raw)
    before_headers, before_parts = reading(stdlib_message_bytes(spec, from_address))
    assert headers["Subject"] == LINE_BREAKS.sub(" ", spec.subject).strip()
    if subject_as_before:
        assert headers["Subject"] == before_headers["Subject"].strip()
    del headers["Subject"], before_headers["Subject"]
    assert headers == before_headers
    assert (
        parts
        == before_parts
        == [
            ("multipart/alternative", ""),
            ("text/plain", lines_of(spec.text)),
            ("text/html", lines_of(spec.html)),
        ]
    )
    assert parse(raw)["Date"] is not None
    assert_well_formed(raw, seven_bit=not needs_smtputf8(from_address, spec.to))
    return raw


def lines_of(text: str) -> str:
    """A part's text as a reader gets it: each line end one LF, one at the end."""
    return b"".join(line + b"\n" for line in text.encode().splitlines()).decode() or "\n"


def assert_well_formed(raw: bytes, *, seven_bit: bool) -> None:
    assert b"\n" not in raw.replace(b"\r\n", b""), "a bare LF"
    assert b"\r" not in raw.replace(b"\r\n", b""), "a bare CR"
    lines = raw.split(b"\r\n")
    assert max(len(line) for line in lines) <= 998
    if seven_bit:
        assert raw.isascii()
    head = raw.split(b"\r\n\r\n", 1)[0].decode("utf-8")
    names = [line.split(":", 1)[0] for line in head.split("\r\n") if not line.startswith(" ")]
    assert names == ["From", "To", "Subject", "Date", "Message-ID", "MIME-Version", "Content-Type"]


def rendered_specs() -> list[tuple[str, EmailMessageSpec]]:
    """Every fixture's email in every locale and notice, as the relay renders it."""
    templates = Templates()
    specs = []
    for path in FIXTURE_FILES:
        event = fixture_event(path)
        for locale in LOCALES:
            for notice in (None, Notice.REMINDER, Notice.PAID, Notice.EXPIRED):
                n = Notification(
                    event, "K12345678M", "Lucía", "Acme", locale, notice is Notice.PAID, "msg_1"
                )
                n = Notification(**{**n.__dict__, "notification": notice, "whatsapp": True})
                rendered = templates.email(n)
                spec = EmailMessageSpec(
                    "ana@example.com", rendered.subject, rendered.text, rendered.html, "msg_1"
                )
                specs.append((f"{path.parent.name}/{path.stem}/{locale}/{notice}", spec))
    return specs


def test_every_fixture_email_reads_as_the_stdlib_built_it() -> None:
    specs = rendered_specs()
    assert len(specs) >= 24 * 3 * 4
    for _name, spec in specs:
        assert_reads_as_before(spec, subject_as_before=True)


def spec_of(subject: str, text: str, html: str, to: str = "ana@example.com") -> EmailMessageSpec:
    return EmailMessageSpec(to, subject, text, html, "msg_hypothesis")


@SETTINGS
@given(subject=any_text, text=any_text, html=any_text)
@example(subject="=?utf-8?q?forged?= word", text="a\rb\r\nc\n\n", html=" trailing \t\n.\n")
@example(subject="x" * 998, text="From the start\n=3D\n", html="--=_relay_alternative\n")
def test_any_text_reads_as_the_stdlib_built_it(subject: str, text: str, html: str) -> None:
    assert_reads_as_before(spec_of(subject, text, html))


@settings(SETTINGS, max_examples=25)
@given(subject=long_subjects, text=long_lines, html=long_lines)
def test_long_lines_are_folded_and_read_back_whole(subject: str, text: str, html: str) -> None:
    assert_reads_as_before(spec_of(subject, text, html))


@settings(SETTINGS, max_examples=40)
@given(name=names)
@example(name="José; Pérez, (Acme)")
@example(name="José Pérez (Acme)")
def test_display_names_read_as_given_or_are_refused_with_a_line_break(name: str) -> None:
    from_address = f"{name} <relay@example.com>"
    if LINE_BREAKS.search(name):
        with pytest.raises(PermanentError, match="line break"):
            message_bytes(spec_of("s", "t", "h"), from_address)
        return
    raw = message_bytes(spec_of("s", "t", "h"), from_address)
    # A name SMTP's own address parser (parseaddr, in aiosmtplib) takes for the address
    # makes the envelope need SMTPUTF8; the header is then UTF-8 as it is.
    utf8 = needs_smtputf8(from_address, "ana@example.com")
    assert_well_formed(raw, seven_bit=not utf8)
    before = stdlib_message_bytes(spec_of("s", "t", "h"), from_address)
    if name.isascii():  # an ASCII name is the operator's, verbatim, as before
        assert reading(raw) == reading(before)
    elif not utf8:  # encoded, and read back whole, whatever punctuation it holds
        (address,) = parse(raw)["From"].addresses
        assert address.addr_spec == "relay@example.com"
        # A reader's parser folds runs of spaces in a phrase: the words are what count.
        assert address.display_name.split() == name.split()


def test_a_non_ascii_display_name_is_encoded_and_needs_no_smtputf8() -> None:
    from_address = "José Pérez <relay@example.com>"
    assert not needs_smtputf8(from_address, "ana@example.com")
    raw = assert_reads_as_before(spec_of("Olá", "t", "h"), from_address)
    assert b"From: =?utf-8?b?" in raw


def test_a_non_ascii_address_is_written_as_utf8_for_smtputf8() -> None:
    spec = spec_of("Olá", "t", "h", to="joão@example.com")
    assert needs_smtputf8(FROM, spec.to)
    raw = message_bytes(spec, FROM)
    assert "To: joão@example.com\r\n".encode() in raw
    assert_well_formed(raw, seven_bit=False)
    assert str(parse(raw)["To"]) == "joão@example.com"


@pytest.mark.parametrize(
    ("field", "value"),
    [("to", "ana@example.com\r\nBcc: evil@example.com"), ("to", "ana@example.com\u2028X: 1")],
)
def test_a_line_break_in_an_address_is_refused(field: str, value: str) -> None:
    with pytest.raises(PermanentError, match="line break"):
        message_bytes(spec_of("s", "t", "h", to=value), FROM)
    with pytest.raises(PermanentError, match="from address contains a line break"):
        message_bytes(spec_of("s", "t", "h"), value)


def test_a_hostile_subject_stays_one_header() -> None:
    spec = spec_of("Boleto\r\nBcc: evil@example.com\r\n\r\nforged\u2028X-Evil: 1", "t", "h")
    parsed = parse(assert_reads_as_before(spec))
    assert "Bcc" not in parsed and "X-Evil" not in parsed
    assert parsed["Subject"] == "Boleto Bcc: evil@example.com forged X-Evil: 1"


def test_the_message_id_is_the_same_on_every_attempt() -> None:
    spec = spec_of("s", "t", "h")
    first, second = parse(message_bytes(spec, FROM)), parse(message_bytes(spec, FROM))
    assert first["Message-ID"] == second["Message-ID"] == message_id_header("msg_hypothesis")
    assert message_id_header("dlv 1<x>@y") == "<dlv=201=3Cx=3E=40y@relay>"


def test_a_maildir_file_uses_the_local_line_end(tmp_path: Path) -> None:
    raw = message_bytes(spec_of("Olá", "línea\r\n", "<p>é</p>"), FROM, linesep="\n")
    assert b"\r" not in raw
    assert reading(raw) == reading(message_bytes(spec_of("Olá", "línea\r\n", "<p>é</p>"), FROM))


def test_a_very_long_display_name_is_split_into_lines_within_998() -> None:
    raw = message_bytes(spec_of("s", "t", "h"), f"{'é' * 600} <relay@example.com>")
    assert_well_formed(raw, seven_bit=True)
    (address,) = parse(raw)["From"].addresses
    assert address.addr_spec == "relay@example.com"
    assert set(address.display_name) <= {"é", " "}


@pytest.mark.parametrize(
    "from_address",
    [
        '"José Pérez" <relay@example.com>',
        "relay@example.com (José Pérez)",
        " José Pérez  <relay@example.com>",
    ],
)
def test_every_way_of_writing_a_non_ascii_name_is_encoded(from_address: str) -> None:
    raw = message_bytes(spec_of("s", "t", "h"), from_address)
    assert_well_formed(raw, seven_bit=True)
    (address,) = parse(raw)["From"].addresses
    assert (address.display_name, address.addr_spec) == ("José Pérez", "relay@example.com")
