"""Crash safety: 1,000 events, the relay stopped three times at random moments, nothing lost.

The relay sends each slip to a webhook and by email, both slow to answer, so attempts
are in flight whenever it is stopped. Posters act as Hotmart does: an event that got
no 200 is sent again until it does. After `kill -9`, only attempts that were in flight
may arrive twice, and a repeat carries the same webhook-id / Message-ID and the same
body. After SIGTERM, which drains, nothing arrives twice.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.acceptance.conftest import Figures
from tests.acceptance.harness import Relay, relay_config, slip_event, wait_for
from tests.acceptance.peer_control import Sink, Smtp, peer
from tests.conftest import SECRET

EVENTS = 1_000
STOPS = 3
POSTERS = 8
REPLY_DELAY_S = 0.05  # the sink and the SMTP server both answer this slowly
PER_DESTINATION = 8  # attempts in flight per destination: what a kill may repeat
RUN_BOUND_S = 180.0
# Printed with the figures, so a failing run can be repeated exactly.
SEED = int(os.environ.get("RELAY_CRASH_SEED", random.SystemRandom().randrange(1 << 30)))


@dataclass
class Posting:
    """What the posters saw, as Hotmart would: 200s, and refusals it would send again."""

    events: list[dict[str, Any]]
    ok: set[str] = field(default_factory=set)
    replies_200: int = 0
    refused: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    next_index: int = 0

    def take(self) -> dict[str, Any] | None:
        with self.lock:
            if self.next_index >= len(self.events):
                return None
            self.next_index += 1
            return self.events[self.next_index - 1]

    def post_all(self, relay: Relay, deadline: float) -> None:
        while (event := self.take()) is not None:
            while time.monotonic() < deadline:
                try:
                    status = relay.post(event, timeout_s=30).status
                except OSError:
                    status = 0  # the relay is down: Hotmart retries later
                with self.lock:
                    if status == 200:
                        self.replies_200 += 1
                        self.ok.add(event["id"])
                        break
                    self.refused += 1
                time.sleep(0.02)


def crash_run(
    tmp_path: Path, figures: Figures, stop: Callable[[Relay], None], how: str
) -> dict[str, Any]:
    rng = random.Random(SEED)
    figures.add(f"{how}: seed {SEED} (RELAY_CRASH_SEED={SEED} repeats this run)")
    with peer("sink", tmp_path) as sink_process, peer("smtp", tmp_path) as smtp_process:
        sink, smtp = Sink(sink_process), Smtp(smtp_process)
        sink.script("/hook", default={"status": 200, "delay_s": REPLY_DELAY_S})
        smtp.script(delay_s=REPLY_DELAY_S)
        # The cap does not adapt here, so that it bounds what a kill may repeat.
        raw = relay_config(
            tmp_path,
            timeout="10s",
            per_destination_concurrency=PER_DESTINATION,
            per_destination_max_concurrency=PER_DESTINATION,
        )
        raw["email"] = {
            "from": "Relay <relay@example.com>",
            "transport": "smtp",
            "smtp": {"host": "127.0.0.1", "port": smtp.port, "pool_size": PER_DESTINATION},
        }
        affiliate = raw["producers"][0]["affiliates"][0]  # K12345678M
        affiliate["destinations"] = [
            {"kind": "webhook", "url": sink.url("/hook"), "secret": SECRET},
            {"kind": "email", "to": "lucia@example.com"},
        ]
        relay = Relay.from_config(raw, tmp_path)
        posting = Posting([slip_event() for _ in range(EVENTS)])
        deadline = time.monotonic() + RUN_BOUND_S
        relay.start()
        try:
            posters = [
                threading.Thread(target=posting.post_all, args=(relay, deadline))
                for _ in range(POSTERS)
            ]
            for thread in posters:
                thread.start()
            for moment in sorted(rng.sample(range(50, EVENTS - 50), STOPS)):
                wait_for(
                    lambda m=moment: len(posting.ok) >= m,
                    timeout_s=RUN_BOUND_S,
                    what=f"{moment} events accepted",
                )
                stop(relay)
                relay.start()
            for thread in posters:
                thread.join(timeout=max(0.0, deadline - time.monotonic()))
            assert len(posting.ok) == EVENTS, "the posters ran out of time"

            def all_delivered() -> bool:
                rows = relay.query(
                    "SELECT COUNT(*) FROM deliveries"
                    " WHERE kind = 'notification' AND status = 'delivered'"
                )
                return bool(rows[0][0] == 2 * EVENTS)

            wait_for(all_delivered, timeout_s=RUN_BOUND_S, what="every slip delivered")
            assert relay.terminate() == 0
        finally:
            relay.stop()
        hits = sink.hits("/hook")
        mails = smtp.mails()
    rows = relay.query(
        "SELECT d.*, e.hotmart_id FROM deliveries d JOIN events e ON e.id = d.event_id"
        " WHERE d.kind = 'notification'"
    )
    return {"relay": relay, "posting": posting, "rows": rows, "hits": hits, "mails": mails}


def check_run(run: dict[str, Any], figures: Figures, how: str) -> dict[str, int]:
    """Everything accepted was delivered; return the duplicated copies per channel."""
    relay: Relay = run["relay"]
    posting: Posting = run["posting"]
    rows = run["rows"]
    by_channel = {ch: [r for r in rows if r["channel"] == ch] for ch in ("webhook", "email")}
    # Every event that got a 200 is on disk once, with one delivery per destination.
    assert {r["hotmart_id"] for r in rows} == posting.ok
    for channel_rows in by_channel.values():
        assert len(channel_rows) == len(posting.ok)
        assert {r["status"] for r in channel_rows} == {"delivered"}
    # One recorded attempt each: any other copy was in flight when its relay died.
    assert {r["attempts"] for r in rows} == {1}

    webhook_copies = _copies(run["hits"], lambda h: h["headers"]["webhook-id"])
    email_copies = _copies(run["mails"], lambda m: m["message_id"].strip("<>").split("@")[0])
    duplicated = {}
    for channel, copies in (("webhook", webhook_copies), ("email", email_copies)):
        assert set(copies) == {r["message_id"] for r in by_channel[channel]}, channel
        duplicated[channel] = sum(len(c) - 1 for c in copies.values())
        _only_in_flight_repeats(relay, copies, channel)
    for message_id, copies in webhook_copies.items():
        assert len({c["body"] for c in copies}) == 1, f"{message_id}: the body changed"
        event_id = json.loads(copies[0]["body"])["event_id"]
        assert event_id in posting.ok

    figures.add(
        f"{how}: posted {EVENTS}, 200s {posting.replies_200} "
        f"(refused or unanswered while down: {posting.refused}), stopped {STOPS}x, "
        f"delivered {len(by_channel['webhook'])} webhooks + {len(by_channel['email'])} emails, "
        f"duplicated {duplicated['webhook']} webhooks + {duplicated['email']} emails"
    )
    return duplicated


def _copies(
    received: list[dict[str, Any]], message_id: Callable[[dict[str, Any]], str]
) -> dict[str, list[dict[str, Any]]]:
    copies: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for item in received:
        copies[message_id(item)].append(item)
    return copies


def _only_in_flight_repeats(
    relay: Relay, copies: dict[str, list[dict[str, Any]]], channel: str
) -> None:
    """A repeat must come from a later relay than the copy it repeats, and that earlier
    relay must have been stopped with the attempt in flight (it recorded none)."""

    def incarnation(arrived: float) -> int:
        return max(i for i, started in enumerate(relay.starts) if started <= arrived)

    last = len(relay.starts) - 1
    repeats_per_stop: Counter[int] = Counter()
    for message_id, items in copies.items():
        lives = sorted(incarnation(item["arrived"]) for item in items)
        assert len(set(lives)) == len(lives), f"{channel} {message_id}: twice from one relay"
        assert last not in lives[:-1], f"{channel} {message_id}: repeated after the last start"
        repeats_per_stop.update(lives[:-1])
    # Only what was in flight at a stop can repeat: at most the per-destination limit.
    assert all(n <= PER_DESTINATION for n in repeats_per_stop.values()), repeats_per_stop


@pytest.mark.timeout(2 * RUN_BOUND_S + 60)
def test_kill_9_three_times_loses_nothing(tmp_path: Path, figures: Figures) -> None:
    run = crash_run(tmp_path, figures, Relay.kill, "kill -9")
    check_run(run, figures, "kill -9")


@pytest.mark.timeout(2 * RUN_BOUND_S + 60)
def test_sigterm_three_times_duplicates_nothing(tmp_path: Path, figures: Figures) -> None:
    def sigterm(relay: Relay) -> None:
        assert relay.terminate() == 0

    run = crash_run(tmp_path, figures, sigterm, "SIGTERM")
    duplicated = check_run(run, figures, "SIGTERM")
    assert duplicated == {"webhook": 0, "email": 0}
