"""What the engine's unit tests build it from: a fake clock and sleeper, a scripted
sender at the channel seam, the in-memory store, and the real Dispatcher and
AttemptRunner wired by hand."""

from __future__ import annotations

import asyncio
import math
import random
from collections import deque
from pathlib import Path
from typing import Any

from relay.attempt import AttemptRunner
from relay.config import Config
from relay.decide import decide
from relay.dispatch import Dispatcher
from relay.hotmart import parse_json_event
from relay.messages import Outgoing
from relay.outbox import decided_rows, new_event
from relay.outcomes import AttemptReport, DeliveryError
from relay.records import SERVE_LEASE_OWNER
from relay.targets import TemplateSet
from tests.conftest import SECRET, base_config_dict, build_config, fixture_json
from tests.unit.memory_store import MemoryStore

HOOK = "https://hooks.example.com/lucia"


class FakeClock:
    """Time that moves only when the engine sleeps: a wait of 2 s takes no time at all."""

    def __init__(self) -> None:
        self.now = 1_764_000_000_000
        self.slept_s: list[float | None] = []

    def now_ms(self) -> int:
        return self.now

    async def sleep(self, event: asyncio.Event, timeout_s: float | None) -> bool:
        self.slept_s.append(timeout_s)
        if event.is_set():
            return True
        if timeout_s is None:
            await event.wait()
            return True
        self.now += math.ceil(timeout_s * 1000)
        await asyncio.sleep(0)
        return event.is_set()


class ScriptedSender:
    """The channel seam: answers each send with the next scripted outcome (an error to
    raise, or None for a 200), after `gate` opens if one is set."""

    def __init__(self, *outcomes: DeliveryError | None) -> None:
        self.script: deque[DeliveryError | None] = deque(outcomes)
        self.sent: list[Outgoing] = []
        self.gate: asyncio.Event | None = None

    async def send(self, message: Outgoing, *, now_s: float) -> AttemptReport:
        self.sent.append(message)
        if self.gate is not None:
            await self.gate.wait()
        outcome = self.script.popleft() if self.script else None
        if outcome is not None:
            raise outcome
        return AttemptReport(status_code=200, latency_ms=1.0, detail="200 OK")


def webhook_config(tmp_path: Path, **delivery: Any) -> Config:
    """Lucía alone, with one webhook destination; the sender never really posts."""
    raw = base_config_dict(tmp_path)
    raw["delivery"].update(delivery)
    lucia = raw["producers"][0]["affiliates"][0]
    lucia["destinations"] = [{"kind": "webhook", "url": HOOK, "secret": SECRET}]
    raw["producers"][0]["affiliates"] = [lucia]
    return build_config(raw, tmp_path)


def engine(
    config: Config,
    store: MemoryStore,
    sender: ScriptedSender,
    clock: FakeClock,
    *,
    lease_s: float = 60.0,
    budget_s: float = 30.0,
    owner: str = SERVE_LEASE_OWNER,
) -> tuple[Dispatcher, AttemptRunner]:
    runner = AttemptRunner(
        config, store, sender, TemplateSet(config), clock, budget_s=budget_s, rng=random.Random(7)
    )
    dispatcher = Dispatcher(
        store,
        runner,
        config.delivery,
        clock,
        asyncio.Event(),
        lease_s=lease_s,
        owner=owner,
        sleeper=clock.sleep,
    )
    return dispatcher, runner


async def queue_slip(store: MemoryStore, config: Config, clock: FakeClock, name: str) -> int:
    """One OXXO slip for Lucía, decided and stored as ingest would; its delivery id."""
    payload = fixture_json("billet_printed_oxxo.json")
    payload["id"] = name
    event = parse_json_event(payload)
    producer = config.producers[0]
    new = new_event(producer.id, event, decided_rows(decide(producer, event)))
    result = await store.ingest(new, clock.now_ms())
    return result.event_row_id
