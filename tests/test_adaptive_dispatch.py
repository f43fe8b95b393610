"""The adaptive per-destination cap against real receivers: a fast one earns more than the
floor of 4 in flight, a failing one never gets more than 4."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

from aiohttp import web

from relay.decide import decide
from relay.engine import open_relay, running
from relay.hotmart import parse_json_event
from relay.outbox import decided_rows, new_event
from relay.records import HistoryFilter
from tests.conftest import SECRET, base_config_dict, build_config, fixture_json
from tests.peers import Reply, wait_until, webhook_sink

FAST, FAILING = "/fast", "/failing"
SLIPS = 400


class Concurrency:
    """Replies that count how many requests to each path are being answered at once."""

    def __init__(self) -> None:
        self.now: Counter[str] = Counter()
        self.most: Counter[str] = Counter()

    def reply(self, code: int) -> Reply:
        async def answer(request: web.Request) -> web.Response:
            self.now[request.path] += 1
            self.most[request.path] = max(self.most[request.path], self.now[request.path])
            try:
                await asyncio.sleep(0.002)  # long enough for requests to overlap
                return web.Response(status=code, text="ok" if code == 200 else "down")
            finally:
                self.now[request.path] -= 1

        return answer


async def test_a_fast_receiver_earns_slots_and_a_failing_one_stays_at_the_floor(
    tmp_path: Path,
) -> None:
    seen = Concurrency()
    async with webhook_sink() as sink:
        sink.on(FAST, *[seen.reply(200) for _ in range(SLIPS)])
        sink.on(FAILING, *[seen.reply(500) for _ in range(SLIPS)])
        raw = base_config_dict(tmp_path)
        # Failures are retried much later and never disable the destination here.
        raw["delivery"].update(retry_delays=["1h"], disable_after_failures=100_000)
        lucia = raw["producers"][0]["affiliates"][0]
        lucia["destinations"] = [
            {"kind": "webhook", "id": "fast", "url": sink.url(FAST), "secret": SECRET},
            {"kind": "webhook", "id": "failing", "url": sink.url(FAILING), "secret": SECRET},
        ]
        raw["producers"][0]["affiliates"] = [lucia]
        config = build_config(raw, tmp_path)
        assert config.delivery.per_destination_concurrency == 4
        async with open_relay(config) as relay:
            producer = config.producers[0]
            for n in range(SLIPS):  # each slip: one row per destination
                payload = fixture_json("billet_printed_oxxo.json")
                payload["id"] = f"slip-{n}"
                event = parse_json_event(payload)
                rows = decided_rows(decide(producer, event))
                await relay.store.ingest(new_event(producer.id, event, rows), relay.clock.now_ms())

            async def all_attempted() -> bool:
                rows = await relay.store.history(HistoryFilter(limit=2 * SLIPS))
                return sum(row.attempts > 0 for row in rows) == 2 * SLIPS

            async with running(relay):
                await wait_until(all_attempted, timeout_s=60)
    assert len(sink.at(FAST)) == len(sink.at(FAILING)) == SLIPS
    assert seen.most[FAST] > 4, seen.most
    assert seen.most[FAILING] <= 4, seen.most
