"""`relay replay` and `relay send-test` beside a running server (issue 6 defect 4, issue 7).

With a server running, the CLI queues and the server sends, so the server's log shows
every attempt and its leases keep one attempt in flight per delivery. Here the server
runs in the test's own process, holding the real single-instance lock, and the CLI's
SIGUSR1 reaches it through the event loop's signal handler.
"""

from __future__ import annotations

import asyncio
import io
import logging
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from relay.commands.progress import ProgressBar
from relay.config import Config
from relay.instance import single_instance
from relay.records import HistoryFilter
from tests.conftest import build_config, fixture_json, key_of, relay_of
from tests.peers import WebhookSink, status, wait_until, webhook_sink
from tests.test_cli import run_cli, with_webhook, write_toml
from tests.test_delivery import settled
from tests.test_ingest import post_json
from tests.test_readiness import app_starter


@pytest.fixture
def server_lock(tmp_path: Path) -> Iterator[None]:
    """The lock `relay serve` holds, with this process's pid: `wake_server` signals us."""
    with single_instance(tmp_path / "relay.sqlite3"):
        yield


@pytest.fixture
def serve(aiohttp_client: Callable[..., Any]) -> Callable[[Config], Any]:
    """The real app, woken by SIGUSR1 as `relay serve` is."""
    return app_starter(aiohttp_client, wake_on_signal=True)


async def failed_slip(
    serve: Any, raw: dict[str, Any], tmp_path: Path, sink: WebhookSink
) -> tuple[Any, Path, int]:
    """Serve with Lucía's webhook failing five times; return the failed delivery's id."""
    sink.on("/hook", *[status(500)] * 5)
    raw = with_webhook(raw, sink)
    client = await serve(build_config(raw, tmp_path))
    await post_json(client, fixture_json("billet_printed_oxxo.json"))
    await wait_until(lambda: settled(client))
    (row,) = await relay_of(client).store.history(HistoryFilter(status="failed"))
    return client, write_toml(raw, tmp_path / "relay.toml"), row.id


def attempt_lines(caplog: pytest.LogCaptureFixture, delivery_id: int) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name == "relay.attempt" and f" delivery {delivery_id} " in r.getMessage()
    ]


async def test_replay_is_sent_by_the_running_server_and_reaches_its_log(
    serve: Any,
    server_lock: None,
    config_dict: dict[str, Any],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    async with webhook_sink() as sink:
        client, path, delivery_id = await failed_slip(serve, config_dict, tmp_path, sink)
        capsys.readouterr()
        assert await run_cli(path, "replay", str(delivery_id)) == 0
        out = capsys.readouterr().out
        assert f"delivery {delivery_id} -> {key_of(config_dict, 'K12345678M')}: delivered" in out
        hits = sink.at("/hook")
        assert len(hits) == 6 and len({h.headers["webhook-id"] for h in hits}) == 1
    # The sixth attempt was the server's (the CLI runs in a worker thread), so the
    # server's log follows the delivery through its replay.
    (sixth,) = [r for r in attempt_lines(caplog, delivery_id) if "attempt 6:" in r.getMessage()]
    assert sixth.threadName == threading.main_thread().name


async def test_send_test_is_sent_by_the_running_server(
    serve: Any,
    server_lock: None,
    config_dict: dict[str, Any],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    client = await serve(build_config(config_dict, tmp_path))
    path = write_toml(config_dict, tmp_path / "relay.toml")
    assert await run_cli(path, "send-test", "--affiliate", "K12345678M") == 0
    (row,) = await relay_of(client).store.history(HistoryFilter())
    assert (row.kind, row.status) == ("test", "delivered")
    (line,) = attempt_lines(caplog, row.id)
    assert line.threadName == threading.main_thread().name


async def test_replay_of_a_delivery_in_flight_is_refused(
    serve: Any,
    config_dict: dict[str, Any],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Defect 4: requeue took a row being sent, and the server and the CLI both sent it."""
    gate = asyncio.Event()

    async def held(request: web.Request) -> web.Response:
        await gate.wait()
        return web.Response(text="ok")

    async with webhook_sink() as sink:
        sink.on("/hook", held)
        raw = with_webhook(config_dict, sink)
        client = await serve(build_config(raw, tmp_path))
        path = write_toml(raw, tmp_path / "relay.toml")
        await post_json(client, fixture_json("billet_printed_oxxo.json"))
        await wait_until(lambda: len(sink.at("/hook")) == 1)
        (row,) = await relay_of(client).store.history(HistoryFilter(channel="webhook"))
        capsys.readouterr()
        assert await run_cli(path, "replay", str(row.id)) == 1
        out = capsys.readouterr().out
        assert f"delivery {row.id} is being sent right now; try again in a moment" in out
        gate.set()
        await wait_until(lambda: settled(client))
        assert len(sink.at("/hook")) == 1
    (row,) = await relay_of(client).store.history(HistoryFilter(channel="webhook"))
    assert (row.status, row.attempts) == ("delivered", 1)


async def test_send_test_refuses_an_affiliate_without_buyer_data(
    config_dict: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 7: send-test sent buyer-like data to an affiliate denied buyer data."""
    path = write_toml(config_dict, tmp_path / "relay.toml")
    assert await run_cli(path, "send-test", "--affiliate", "P0000000NP") == 2
    assert "buyer_data = false" in capsys.readouterr().err
    assert not (tmp_path / "mail" / "new").exists()  # nothing was written to its maildir


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_progress_bar_never_shares_a_line_with_a_log_line() -> None:
    screen = Terminal()
    handler = logging.StreamHandler(screen)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        bar = ProgressBar(3, out=screen)
        with bar.beside_logs():
            bar.advance()
            logging.getLogger("relay.attempt").warning("event e delivery 7 attempt 1: failed")
            bar.advance(2)
    finally:
        root.removeHandler(handler)
    shown = screen.getvalue()
    # What stays visible: the text after a line's last carriage return and line clear.
    lines = [line.rsplit("\r", 1)[-1].replace("\x1b[K", "") for line in shown.split("\n")]
    assert "event e delivery 7 attempt 1: failed" in lines
    assert lines[-2].endswith("3/3") and lines[-1] == ""
    assert not any("[#" in line and "event e" in line for line in lines)


def test_the_progress_bar_off_a_terminal_is_one_summary_line() -> None:
    out = io.StringIO()
    bar = ProgressBar(2, out=out)
    bar.advance()
    bar.advance()
    bar.finish()
    assert out.getvalue() == "settled 2/2\n"
