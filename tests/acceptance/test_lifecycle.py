"""`relay serve` as an operator runs it: SIGTERM exits 0, and a CLI replay in another
process hands its retry to the running server with SIGUSR1 (the server never polls)."""

from __future__ import annotations

from pathlib import Path

from tests.acceptance.harness import (
    Relay,
    relay_config,
    running,
    slip_event,
    wait_for,
    webhook_affiliate,
)
from tests.acceptance.peer_control import Sink

SETTLE_S = 30.0


def test_sigterm_stops_serve_cleanly_with_exit_0(tmp_path: Path) -> None:
    relay = Relay.from_config(relay_config(tmp_path), tmp_path)
    relay.start()
    try:
        assert relay.terminate() == 0
    finally:
        relay.stop()


def test_cli_replay_hands_its_retry_to_the_running_server(tmp_path: Path, sink: Sink) -> None:
    """The server sleeps with nothing due; a CLI replay fails once and leaves a retry.
    SIGUSR1 from the CLI is what makes the server pick it up: there is no polling."""
    sink.script("/handover", *[{"status": 503}] * 3, default={"status": 200})
    raw = relay_config(tmp_path, retry_delays=["500ms"])
    raw["producers"][0]["affiliates"] = [webhook_affiliate("K12345678M", sink.url("/handover"))]
    with running(Relay.from_config(raw, tmp_path)) as relay:
        event = slip_event("K12345678M")
        assert relay.post(event).status == 200
        row = wait_for(
            lambda: relay.settled(event["id"], ("failed",)), timeout_s=SETTLE_S, what="failed"
        )
        assert row["attempts"] == 2

        replay = relay.cli("replay", str(row["id"]))

        assert replay.returncode == 1  # its own attempt failed: a retry is pending
        assert "pending" in replay.stdout
        # A fresh schedule after the replay, and the server makes the retry.
        done = wait_for(
            lambda: relay.settled(event["id"], ("delivered",)), timeout_s=SETTLE_S, what="retried"
        )
        assert done["attempts"] == 4
    assert len({h["headers"]["webhook-id"] for h in sink.hits("/handover")}) == 1
