"""Bad input against a running relay: hypothesis writes the requests, byte by byte.

Bodies near Hotmart's shape (the fixtures with leaves replaced or removed), random
bytes, huge numbers, deep nesting, other encodings, odd content types and odd header
bytes, sent over a raw socket so that nothing on our side tidies them up. Whatever
arrives: no crash, no 5xx other than 503, and every rejection a JSON 4xx that says
what is wrong. `make test` runs a bounded, repeatable number of inputs; `make fuzz`
runs RELAY_FUZZ_EXAMPLES (100,000) of them with a fresh seed.
"""

from __future__ import annotations

import json
import os
import socket
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.acceptance.conftest import Figures
from tests.acceptance.harness import Relay, relay_config, running, slip_event, wait_for
from tests.acceptance.peer_control import Sink
from tests.conftest import HOTTOK, SECRET, fixture_json, fixture_text
from tests.hotmart_bodies import hotmart_like, json_values

FUZZ_EXAMPLES = int(os.environ.get("RELAY_FUZZ_EXAMPLES", "0"))
# make test: a fixed, repeatable sample; make fuzz: many inputs, a new seed each run.
SETTINGS = settings(
    max_examples=FUZZ_EXAMPLES or 150,
    derandomize=not FUZZ_EXAMPLES,
    database=None if not FUZZ_EXAMPLES else settings.default.database,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
MAX_BODY_BYTES = 65_536  # this relay's server.max_body_bytes, so 413 is reachable cheaply
REPLY_TIMEOUT_S = 30.0
REJECTIONS = frozenset({400, 401, 413, 415})


# -- raw HTTP --------------------------------------------------------------------------------


def raw_post(
    port: int, headers: list[tuple[bytes, bytes]], body: bytes
) -> tuple[int, dict[str, str], bytes]:
    """One POST written byte for byte; the reply's status, headers and body."""
    head = [b"POST /hotmart/webhook HTTP/1.1", b"Host: 127.0.0.1", b"Connection: close"]
    head += [name + b": " + value for name, value in headers]
    head.append(b"Content-Length: " + str(len(body)).encode())
    request = b"\r\n".join(head) + b"\r\n\r\n" + body
    with socket.create_connection(("127.0.0.1", port), timeout=REPLY_TIMEOUT_S) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    reply = b"".join(chunks)
    assert reply, "the relay closed the connection without a reply"
    head_bytes, _, reply_body = reply.partition(b"\r\n\r\n")
    status_line, *header_lines = head_bytes.decode("latin-1").split("\r\n")
    reply_headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        reply_headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), reply_headers, reply_body


# -- strategies ------------------------------------------------------------------------------

# Header bytes HTTP allows in a value (RFC 9110: VCHAR, SP, HTAB and obs-text): any of
# them may arrive, and none may crash the relay.
header_bytes = st.binary(max_size=200).map(
    lambda raw: bytes(b for b in raw if b == 9 or 32 <= b <= 126 or b >= 128).strip()
)
ascii_header_text = st.text(
    alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=100
).map(str.encode)
content_types = st.one_of(
    # Mostly what ingest takes, so that most bodies reach the parser; then anything.
    st.just(b"application/json"),
    st.just(b"application/json"),
    st.just(b"application/json"),
    st.just(b"application/x-www-form-urlencoded"),
    st.sampled_from(
        [
            b"application/json",
            b"application/json; charset=utf-8",
            b"application/json; charset=latin-1",
            b"APPLICATION/JSON",
            b"text/json",
            b"application/x-www-form-urlencoded",
            b"application/x-www-form-urlencoded; charset=utf-8",
            b"text/plain",
            b"multipart/form-data; boundary=xyz",
            b"application/octet-stream",
            b"application/json;;;",
            b"application/",
            b"",
        ]
    ),
    header_bytes,
)


def _nested(depth: int, kind: str) -> bytes:
    if kind == "list":
        return b"[" * depth + b"]" * depth
    return b'{"a":' * depth + b"1" + b"}" * depth


bodies = st.one_of(
    hotmart_like().map(lambda e: json.dumps(e, ensure_ascii=False).encode()),
    hotmart_like().map(lambda e: json.dumps(e).encode("utf-16")),
    hotmart_like().map(lambda e: json.dumps(e, ensure_ascii=False).encode("latin-1", "replace")),
    hotmart_like().map(lambda e: json.dumps(e).encode()[: len(json.dumps(e)) // 2]),  # cut
    json_values.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=2000),
    st.tuples(st.integers(1, 100_000), st.sampled_from(["list", "dict"])).map(
        lambda t: _nested(*t)
    ),
    st.integers(MAX_BODY_BYTES - 2, MAX_BODY_BYTES + 2).map(lambda n: b"{" + b" " * n + b"}"),
    st.sampled_from(
        [
            b'{"id": 1e999, "event": "PURCHASE_BILLET_PRINTED"}',
            b'{"id": 18446744073709551616, "event": "PURCHASE_BILLET_PRINTED"}',
            b'{"id": -9223372036854775809, "event": "X"}',
            b'{"id": "x", "event": "PURCHASE_BILLET_PRINTED", "data": {"purchase": '
            b'{"price": {"value": 1e308}}}}',
            b"\xef\xbb\xbf{}",  # a byte order mark
            b"\x00",
            b"null",
            b"[]",
            b'"string"',
        ]
    ),
    st.dictionaries(st.text(max_size=20), st.text(max_size=50), max_size=10).map(
        lambda form: urlencode(form).encode()
    ),
    st.binary(max_size=500).map(
        lambda raw: fixture_text("v1_postback_billet_printed.form").encode() + raw
    ),
)
# Mostly the right token, so that most bodies get past authentication to the parser.
tokens = st.one_of(
    st.just(HOTTOK.encode()),
    st.just(HOTTOK.encode()),
    st.just(HOTTOK.encode()),
    st.none(),
    st.just(b"wrong-token"),
    ascii_header_text,
)
# Each name once: a repeated singleton header is malformed HTTP, which aiohttp's parser
# refuses in plain text before any handler runs.
extra_headers = st.dictionaries(
    st.sampled_from([b"User-Agent", b"X-Forwarded-For", b"Accept", b"X-Hotmart-Extra", b"Cookie"]),
    header_bytes,
    max_size=3,
).map(lambda headers: list(headers.items()))


# -- the relay under test --------------------------------------------------------------------


@pytest.fixture(scope="module")
def relay(workdir: Path, sink: Sink) -> Iterator[Relay]:
    raw = relay_config(workdir)
    raw["server"]["max_body_bytes"] = MAX_BODY_BYTES
    for affiliate in raw["producers"][0]["affiliates"]:
        affiliate["destinations"] = [
            {"kind": "webhook", "url": sink.url(f"/hook/{affiliate['code']}"), "secret": SECRET}
        ]
    with running(Relay.from_config(raw, workdir)) as started:
        yield started
        assert started.proc is not None and started.proc.poll() is None, "the relay died"
        # The dispatcher survived all that too: one good event still goes all the way.
        event = slip_event()
        assert started.post(event).status == 200
        wait_for(lambda: started.settled(event["id"]), timeout_s=60, what="a last good event")


class Tally:
    """Replies per status, per test: the figures of a fuzz run."""

    def __init__(self) -> None:
        self.statuses: dict[str, Counter[int]] = {}

    def count(self, status: int) -> None:
        test = os.environ.get("PYTEST_CURRENT_TEST", "?").split("::")[-1].split(" ")[0]
        self.statuses.setdefault(test, Counter())[status] += 1


@pytest.fixture(scope="module")
def tally() -> Tally:
    return Tally()


def judge(status: int, headers: dict[str, str], body: bytes) -> None:
    """The contract for any input: 200, or a JSON 4xx saying what is wrong (503 if the
    store cannot commit); never another 5xx."""
    assert status < 500 or status == 503, (status, body[:500])
    assert headers.get("content-type", "").startswith("application/json"), (status, body[:500])
    reply = json.loads(body)
    if status == 200:
        assert reply["status"] in ("accepted", "duplicate", "ignored"), reply
        return
    assert status in REJECTIONS | {503}, (status, reply)
    assert isinstance(reply["error"], str) and reply["error"], reply
    assert isinstance(reply["details"], list) and reply["details"], reply
    assert all(detail for detail in reply["details"]), reply


def _send(relay: Relay, tally: Tally, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    status, reply_headers, reply_body = raw_post(relay.port, headers, body)
    tally.count(status)
    judge(status, reply_headers, reply_body)


@SETTINGS
@given(token=tokens, content_type=content_types, extra=extra_headers, body=bodies)
def test_generated_requests_get_200_or_a_json_4xx(
    relay: Relay, tally: Tally, token: bytes | None, content_type: bytes, extra: Any, body: bytes
) -> None:
    headers = [(b"Content-Type", content_type), *extra]
    if token is not None:
        headers.append((b"X-HOTMART-HOTTOK", token))
    _send(relay, tally, headers, body)


@SETTINGS
@given(token=header_bytes, body=bodies)
@example(token=b"\xff\xfe", body=json.dumps(fixture_json("billet_printed_oxxo.json")).encode())
def test_generated_token_headers_get_a_json_4xx(
    relay: Relay, tally: Tally, token: bytes, body: bytes
) -> None:
    _send(
        relay, tally, [(b"Content-Type", b"application/json"), (b"X-HOTMART-HOTTOK", token)], body
    )


def test_fuzz_figures(relay: Relay, tally: Tally, figures: Figures) -> None:
    """Runs last in this module: the inputs sent and what came back, for the record."""
    for test, statuses in tally.statuses.items():
        figures.add(
            f"{test}: {sum(statuses.values())} inputs, statuses {dict(sorted(statuses.items()))}"
        )
    assert relay.proc is not None and relay.proc.poll() is None, "the relay died"
    assert tally.statuses
