"""Benchmarks 3 and 4: relay's delivery path against the raw client libraries it wraps.

The peers (a webhook sink, an SMTP server) run in their own process. The relay side is
`relay serve` delivering a backlog: the slips are committed through the store protocol
first, then the relay is started and sends them all (claim, render, sign, send,
record), and its own attempt records give the window from the first send to the last
answer. The raw side sends the same number of requests with the bare library. Raw and
relay alternate for three rounds and the median round of each is compared, which damps
a noisy neighbour without picking the luckiest run.

The webhook row is the issue's drain: 30,000 pending webhooks to a fast local sink, the
relay at its default delivery settings (64 in flight, 4 per destination growing while
the sink answers fast), against a raw aiohttp client with 64 requests in flight.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import aiohttp
import aiosmtplib
import orjson

from bench.common import (
    FIXTURE,
    HOST,
    ROOT,
    SECRET,
    Child,
    attempt_window_ms,
    free_port,
    peer_process,
    ratio,
    relay_config,
    relay_process,
    relay_store,
    seed_slips,
    settled_count,
    write_relay_config,
)
from relay.store import Store

ROUNDS = 3  # alternating relay and baseline rounds; each side's median round counts
WEBHOOK_COUNT, WEBHOOK_CONCURRENCY = 30_000, 64  # the drain; 64: delivery.concurrency
EMAIL_COUNT, SMTP_POOL_SIZE = 1000, 8
ONE_SHOT_COUNT = 500  # a fresh connection per message is slow; half the count tells enough
# Roughly what each side sends per second here, to size a run of a given length.
WEBHOOK_PER_S, EMAIL_PER_S = 1500, 300
WARMUP_COUNT = 100
TIMEOUT_S = 10.0
SETTLE_TIMEOUT_S = 300.0  # the relay's whole backlog, on a busy machine
WINDOW_TAIL = 200  # the newest rows whose attempts bound a drain's end
FROM = "Relay bench <relay@example.com>"
TO = "lucia@example.com"

SendOne = Callable[[int], Awaitable[bool]]  # True when the receiver accepted it
Side = Callable[[int], Awaitable["Round"]]  # one timed round of `count` sends


@dataclass
class Round:
    count: int
    elapsed_s: float
    failures: int
    peer_cpu_s: float | None = None

    @property
    def per_s(self) -> float:
        return self.count / self.elapsed_s if self.elapsed_s else 0.0


async def drive(
    count: int, concurrency: int, send_one: SendOne, peer: Child | None = None
) -> Round:
    """`concurrency` workers share `count` sends; time all of them."""
    indexes = iter(range(count))
    failures = 0

    async def worker() -> None:
        nonlocal failures
        for index in indexes:
            if not await send_one(index):
                failures += 1

    cpu_before = peer.cpu_s() if peer else None
    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed_s = time.perf_counter() - started
    cpu_after = peer.cpu_s() if peer else None
    peer_cpu_s = None if cpu_before is None or cpu_after is None else cpu_after - cpu_before
    return Round(count, elapsed_s, failures, peer_cpu_s)


def raw_side(concurrency: int, send_one: SendOne, peer: Child) -> Side:
    async def run(count: int) -> Round:
        return await drive(count, concurrency, send_one, peer)

    return run


def relay_side(destination: dict[str, Any], peer: Child, **delivery: Any) -> Side:
    """`relay serve`, in a fresh directory per round, delivering `count` seeded slips;
    `delivery` overrides the config's defaults."""

    async def run(count: int) -> Round:
        with tempfile.TemporaryDirectory(prefix="relay-bench-delivery-") as tmp:
            workdir = Path(tmp)
            port = free_port()
            raw = relay_config(
                workdir, port, [destination], allow_private_networks=True, **delivery
            )
            config = write_relay_config(workdir, raw)
            first_id = await seed_slips(config, count)
            cpu_before = peer.cpu_s()
            async with relay_process(config, port, workdir), relay_store(config) as store:
                delivered, failed = await _settled(store, count)
                first, last = await attempt_window_ms(store, first_id, WINDOW_TAIL)
            cpu_after = peer.cpu_s()
        peer_cpu_s = None if cpu_before is None or cpu_after is None else cpu_after - cpu_before
        return Round(delivered, (last - first) / 1000, failed + count - delivered, peer_cpu_s)

    return run


async def _settled(store: Store, count: int) -> tuple[int, int]:
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    delivered, failed = await settled_count(store)
    while delivered + failed < count and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        delivered, failed = await settled_count(store)
    return delivered, failed


async def compare(sides: dict[str, Side], count: int, rounds: int) -> dict[str, Any]:
    """Alternate rounds; report each side's median round."""
    timed: dict[str, list[Round]] = {name: [] for name in sides}
    for _ in range(rounds):
        for name, side in sides.items():
            timed[name].append(await side(count))
    result: dict[str, Any] = {"count": count, "rounds": rounds}
    for name, runs in timed.items():
        middle = sorted(runs, key=lambda r: r.per_s)[len(runs) // 2]
        result[name] = {
            "median_per_s": round(middle.per_s, 1),
            "rounds_per_s": [round(r.per_s, 1) for r in runs],
            "failures": sum(r.failures for r in runs),
            # Near 1.0 means the peer server, not the side measured, set the pace.
            "peer_cpu_share": (
                None
                if middle.peer_cpu_s is None or not middle.elapsed_s
                else round(middle.peer_cpu_s / middle.elapsed_s, 2)
            ),
        }
    return result


def add_ratio(result: dict[str, Any], numerator: str, denominator: str) -> float | None:
    value = ratio(result[numerator]["median_per_s"], result[denominator]["median_per_s"])
    result[f"ratio_{numerator}_to_{denominator}"] = value
    return value


def _sized(full: int, per_s: int, seconds: float | None) -> int:
    return full if seconds is None else max(20, int(per_s * seconds))


# -- 3. webhook ----------------------------------------------------------------------


def webhook_body() -> bytes:
    """A compact JSON body of the size relay sends (the slip fixture, re-encoded)."""
    return orjson.dumps(orjson.loads(FIXTURE.read_bytes()))


async def run_webhook(seconds: float | None = None) -> dict[str, Any]:
    count = _sized(WEBHOOK_COUNT, WEBHOOK_PER_S, seconds)
    rounds = 1 if seconds is not None else ROUNDS
    print(
        f"[3] webhook drain: {count} pending, relay at its default delivery settings vs raw "
        f"aiohttp x{WEBHOOK_CONCURRENCY}, median of {rounds}"
    )
    body = webhook_body()
    with tempfile.TemporaryDirectory(prefix="relay-bench-webhook-") as tmp:
        port = free_port()
        url = f"http://{HOST}:{port}/hooks/bench"
        connector = aiohttp.TCPConnector(limit=WEBHOOK_CONCURRENCY)
        async with (
            peer_process("sink", port, Path(tmp)) as sink,
            aiohttp.ClientSession(
                connector=connector, timeout=aiohttp.ClientTimeout(total=TIMEOUT_S)
            ) as session,
        ):
            raw = raw_webhook_sender(session, url, body)
            await drive(min(WARMUP_COUNT, count), WEBHOOK_CONCURRENCY, raw)
            destination = {"kind": "webhook", "url": url, "secret": SECRET}
            sides = {
                "raw": raw_side(WEBHOOK_CONCURRENCY, raw, sink),
                "relay": relay_side(destination, sink),
            }
            result = await compare(sides, count, rounds)
    result["concurrency"] = WEBHOOK_CONCURRENCY
    add_ratio(result, "relay", "raw")
    _print_sides(result, {"raw": "raw aiohttp post", "relay": "relay serve"}, "POST/s")
    print(f"    ratio relay/raw = {result['ratio_relay_to_raw']}")
    return result


def raw_webhook_sender(session: aiohttp.ClientSession, url: str, body: bytes) -> SendOne:
    headers = {"content-type": "application/json"}

    async def send_one(index: int) -> bool:
        try:
            async with session.post(url, data=body, headers=headers) as response:
                await response.read()
                return response.status == 200
        except (aiohttp.ClientError, OSError, TimeoutError):
            return False

    return send_one


# -- 4. email ------------------------------------------------------------------------


def mime_message(index: int) -> EmailMessage:
    """A message the size of relay's slip email (the Spanish templates), built the way
    any Python sender builds one: text and HTML alternatives, a Message-ID."""
    templates = ROOT / "templates"
    message = EmailMessage()
    message["From"] = FROM
    message["To"] = TO
    message["Subject"] = "Tu ficha OXXO para Curso de Repostería Profesional"
    message["Message-ID"] = f"<msg_bench{index:08d}@bench>"
    message.set_content((templates / "billet_printed.es.txt").read_text(encoding="utf-8"))
    message.add_alternative(
        (templates / "billet_printed.es.html").read_text(encoding="utf-8"), subtype="html"
    )
    return message


async def run_email(seconds: float | None = None) -> dict[str, Any]:
    count = _sized(EMAIL_COUNT, EMAIL_PER_S, seconds)
    one_shot_count = _sized(ONE_SHOT_COUNT, EMAIL_PER_S // 2, seconds)
    rounds = 1 if seconds is not None else ROUNDS
    print(f"[4] email: {count} messages over {SMTP_POOL_SIZE} connections, median of {rounds}")
    message = mime_message(0)  # "raw" sends this one prebuilt message throughout
    with tempfile.TemporaryDirectory(prefix="relay-bench-email-") as tmp:
        workdir = Path(tmp)
        port = free_port()
        async with peer_process("smtp", port, workdir) as smtp:
            clients = [
                aiosmtplib.SMTP(hostname=HOST, port=port, timeout=TIMEOUT_S)
                for _ in range(SMTP_POOL_SIZE)
            ]
            try:
                for client in clients:
                    await client.connect()
                prebuilt = raw_pooled_sender(clients, lambda index: message)
                await drive(min(WARMUP_COUNT, count), SMTP_POOL_SIZE, prebuilt)
                sides = {
                    "raw": raw_side(SMTP_POOL_SIZE, prebuilt, smtp),
                    # The same pool, building the MIME message per send as relay does.
                    "raw_mime_per_message": raw_side(
                        SMTP_POOL_SIZE, raw_pooled_sender(clients, mime_message), smtp
                    ),
                    "relay": relay_side(
                        {"kind": "email", "to": TO},
                        smtp,
                        concurrency=SMTP_POOL_SIZE,
                        per_destination_concurrency=SMTP_POOL_SIZE,
                    ),
                }
                result = await compare(sides, count, rounds)
            finally:
                for client in clients:
                    client.close()
            one_shot = await drive(
                one_shot_count, SMTP_POOL_SIZE, one_shot_sender(port, message), smtp
            )
    result["concurrency"] = SMTP_POOL_SIZE
    add_ratio(result, "relay", "raw")
    add_ratio(result, "relay", "raw_mime_per_message")
    result["one_shot"] = {
        "count": one_shot_count,
        "per_s": round(one_shot.per_s, 1),
        "failures": one_shot.failures,
    }
    labels = {
        "raw": "raw aiosmtplib x8",
        "raw_mime_per_message": "  + MIME per message",
        "relay": "relay serve",
    }
    _print_sides(result, labels, "msg/s")
    print(f"    one-shot send()      {one_shot.per_s:8.0f} msg/s  (a connection per message)")
    print(
        f"    ratio relay/raw = {result['ratio_relay_to_raw']}   relay/raw with MIME per "
        f"message = {result['ratio_relay_to_raw_mime_per_message']}"
    )
    return result


def raw_pooled_sender(
    clients: list[aiosmtplib.SMTP], message_for: Callable[[int], EmailMessage]
) -> SendOne:
    """Message i goes out on connection i mod 8; a lock keeps each connection to one send."""
    locks = [asyncio.Lock() for _ in clients]

    async def send_one(index: int) -> bool:
        slot = index % len(clients)
        message = message_for(index)
        async with locks[slot]:
            try:
                await clients[slot].send_message(message, sender=FROM, recipients=[TO])
            except aiosmtplib.SMTPException:
                return False
        return True

    return send_one


def one_shot_sender(port: int, message: EmailMessage) -> SendOne:
    async def send_one(index: int) -> bool:
        try:
            await aiosmtplib.send(
                message, hostname=HOST, port=port, sender=FROM, recipients=[TO], timeout=TIMEOUT_S
            )
        except (aiosmtplib.SMTPException, OSError):
            return False
        return True

    return send_one


def _print_sides(result: dict[str, Any], labels: dict[str, str], unit: str) -> None:
    for name, label in labels.items():
        side = result[name]
        print(
            f"    {label:<20} {side['median_per_s']:8.0f} {unit}  rounds {side['rounds_per_s']}"
            f"  failures {side['failures']}  peer cpu {side['peer_cpu_share']}"
        )
