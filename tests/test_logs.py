"""Logs that cannot be forged and carry no buyer data, in text or JSON (relay.logs)."""

from __future__ import annotations

import errno
import io
import json
import logging
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from relay.cli import build_parser, main
from relay.logs import escape_controls, formatter, install, uninstall
from tests.conftest import build_config, fixture_json
from tests.test_cli import write_toml
from tests.test_ingest import post_json

PII = ("maria.gonzalez@example.com", "María González", "+52 55 1234 5678", "GOMA900101")


@pytest.fixture(autouse=True)
def _log_handler_removed_after() -> Iterator[None]:
    """`main` installs the relay's log handler for good; a test leaves none behind."""
    yield
    uninstall()


def record(message: str, *args: Any, exc: BaseException | None = None) -> logging.LogRecord:
    exc_info = (type(exc), exc, exc.__traceback__) if exc is not None else None
    return logging.LogRecord("relay.test", logging.ERROR, __file__, 1, message, args, exc_info)


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("a\nb", "a\\nb"),
        ("a\r\nb", "a\\r\\nb"),
        ("tab\there", "tab\\there"),
        ("nul\x00bell\x07esc\x1b[31m", "nul\\x00bell\\x07esc\\x1b[31m"),
        ("del\x7f", "del\\x7f"),
        ("c1\x85next\x9b", "c1\\x85next\\x9b"),
        ("ls\u2028ps\u2029", "ls\\u2028ps\\u2029"),
        ("bidi\u202eevil\u2066", "bidi\\u202eevil\\u2066"),
        ("plain é ü ñ 日本", "plain é ü ñ 日本"),
    ],
)
def test_control_characters_are_escaped(raw: str, shown: str) -> None:
    assert escape_controls(raw) == shown


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_a_newline_in_a_logged_value_cannot_forge_a_line(log_format: str) -> None:
    forged = "abc\n2026-11-29T00:00:00.000Z INFO relay.ingest: event FORGED accepted"
    text = formatter(log_format).format(record("event %s %s", forged, "x\u2028y\r"))
    assert len(text.splitlines()) == 1
    assert "\u2028" not in text and "\r" not in text
    if log_format == "json":
        assert "FORGED" in json.loads(text)["message"]
        assert "\n" not in json.loads(text)["message"]


def raise_chain() -> None:
    try:
        try:
            raise KeyError(PII[0])
        except KeyError as inner:
            raise ValueError(f"bad buyer {PII[1]} {PII[2]}") from inner
    except ValueError as middle:
        middle.add_note(f"document {PII[3]}")
        raise RuntimeError(f"while handling {PII[0]}")  # noqa: B904 - the implicit context


@pytest.fixture
def chained() -> Iterator[BaseException]:
    try:
        raise_chain()
    except RuntimeError as exc:
        yield exc


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_tracebacks_keep_frames_and_types_of_the_whole_chain_but_no_message(
    log_format: str, chained: BaseException
) -> None:
    text = formatter(log_format).format(record("internal error on delivery %d", 7, exc=chained))
    if log_format == "json":
        entry = json.loads(text)
        assert entry["message"] == "internal error on delivery 7"
        text = entry["exception"]
    for kept in ("KeyError", "ValueError", "RuntimeError", "raise_chain", "test_logs.py"):
        assert kept in text
    assert "direct cause" in text and "During handling" in text
    for pii in PII:
        assert pii not in text
    assert "message withheld" in text


def test_an_os_error_keeps_its_errno_and_sqlite_its_error_name() -> None:
    disk = OSError(errno.ENOSPC, "No space left on device", "/var/mail/maria.gonzalez@example.com")
    text = formatter("text").format(record("cannot write", exc=disk))
    assert "ENOSPC" in text and "maria" not in text
    query = "SELECT * FROM buyer_maria"  # the message quotes it; the traceback shows the next line
    with closing(sqlite3.connect(":memory:")) as conn:
        try:
            conn.execute(query)
        except sqlite3.Error as exc:
            text = formatter("text").format(record("store", exc=exc))
    assert "SQLITE_ERROR" in text and "maria" not in text


def test_an_os_error_with_odd_arguments_still_formats() -> None:
    text = formatter("text").format(record("odd", exc=OSError("not-a-number", PII[0])))
    assert "OSError" in text and PII[0] not in text


def test_an_exception_group_shows_each_member_without_messages() -> None:
    try:
        raise ExceptionGroup("many", [ValueError(PII[0]), OSError(errno.EPIPE, PII[1])])
    except ExceptionGroup as exc:
        text = formatter("text").format(record("batch", exc=exc))
    assert "ExceptionGroup" in text and "ValueError" in text and "EPIPE" in text
    assert all(pii not in text for pii in PII)


def test_json_is_one_object_per_line_with_the_usual_fields() -> None:
    stream = io.StringIO()
    handler = install("json", "debug", stream=stream)
    try:
        logging.getLogger("relay.test").debug("one %s", "two")
        logging.getLogger("relay.test").info("three")
    finally:
        logging.getLogger().removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    first = json.loads(lines[0])
    assert first["level"] == "DEBUG" and first["logger"] == "relay.test"
    assert first["message"] == "one two"
    assert first["time"].endswith("Z")


def test_install_replaces_its_own_handler_and_sets_the_level() -> None:
    root = logging.getLogger()
    first = install("text", "warning", stream=io.StringIO())
    second = install("text", "error", stream=io.StringIO())
    try:
        assert first not in root.handlers and second in root.handlers
        assert root.level == logging.ERROR
    finally:
        root.removeHandler(second)


def test_log_flags_are_global_and_also_accepted_after_the_command() -> None:
    parser = build_parser()
    args = parser.parse_args(["--log-format", "json", "--log-level", "debug", "check-config"])
    assert (args.log_format, args.log_level) == ("json", "debug")
    args = parser.parse_args(["history", "--log-format", "json", "--log-level", "WARNING"])
    assert (args.log_format, args.log_level) == ("json", "warning")
    args = parser.parse_args(["serve"])
    assert (args.log_format, args.log_level) == ("text", "info")


def test_a_bad_log_flag_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--log-format", "xml", "check-config"]) == 2
    assert main(["check-config", "--log-level", "loud"]) == 2
    err = capsys.readouterr().err
    assert "--log-format" in err and "--log-level" in err and "Traceback" not in err


async def test_an_event_id_holding_a_newline_cannot_forge_a_line_through_ingest(
    relay_client: Any,
    config_dict: dict[str, Any],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.handler.setFormatter(formatter("text"))
    caplog.set_level(logging.DEBUG)  # ingest's line for an accepted event is DEBUG
    client = await relay_client(build_config(config_dict, tmp_path))
    body = fixture_json("billet_printed_oxxo.json")
    body["id"] = "abc\nINFO relay.ingest: event FORGED from acme: accepted"
    assert (await post_json(client, body)).status == 200
    lines = caplog.text.splitlines()
    assert any("abc\\nINFO" in line for line in lines)
    assert not any(line.startswith("INFO relay.ingest: event FORGED") for line in lines)


def test_main_installs_the_safe_formatter(
    config_dict: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_toml(config_dict, tmp_path / "relay.toml")
    try:
        assert main(["--config", str(path), "--log-format", "json", "check-config"]) == 0
        logging.getLogger("relay.test").warning("from %s", "a\nb")
    finally:
        uninstall()
    (line,) = [x for x in capsys.readouterr().err.splitlines() if "relay.test" in x]
    assert json.loads(line)["message"] == "from a\\nb"
