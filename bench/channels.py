"""Benchmarks 3 and 4: relay's channels against the raw client libraries they wrap.

The peers (a webhook sink, an SMTP server) run in their own process. Each side is
warmed up, then raw and relay alternate for a few rounds and the best round of each
is compared, which damps a noisy neighbour without hiding a real difference.
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
    free_port,
    peer_process,
    ratio,
)
from relay.channels.base import DeliveryError, EmailMessageSpec, WebhookMessage
from relay.channels.email import EmailChannel, build_message, open_email_channel
from relay.channels.webhook import WebhookChannel, open_webhook_channel
from relay.config import EmailConfig

WEBHOOK_ROUNDS = 3  # a round takes well under a second
EMAIL_ROUNDS = 2  # a round at relay's pace takes about 4 s
WEBHOOK_COUNT, WEBHOOK_CONCURRENCY = 2000, 32
EMAIL_COUNT, SMTP_POOL_SIZE = 1000, 8
ONE_SHOT_COUNT = 500  # a fresh connection per message is slow; half the count tells enough
WARMUP_COUNT = 100
TIMEOUT_S = 10.0
FROM = "Relay bench <relay@example.com>"
TO = "lucia@example.com"

SendOne = Callable[[int], Awaitable[bool]]  # True when the receiver accepted it


@dataclass
class Round:
    count: int
    elapsed_s: float
    failures: int
    peer_cpu_s: float | None = None

    @property
    def per_s(self) -> float:
        return self.count / self.elapsed_s


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


async def compare(
    sides: dict[str, SendOne], count: int, concurrency: int, peer: Child, rounds: int
) -> dict[str, Any]:
    """Warm every side up, then alternate rounds; report each side's best round."""
    for send_one in sides.values():
        await drive(WARMUP_COUNT, concurrency, send_one)
    timed: dict[str, list[Round]] = {name: [] for name in sides}
    for _ in range(rounds):
        for name, send_one in sides.items():
            timed[name].append(await drive(count, concurrency, send_one, peer))
    result: dict[str, Any] = {"count": count, "concurrency": concurrency, "rounds": rounds}
    for name, runs in timed.items():
        best = max(runs, key=lambda r: r.per_s)
        result[name] = {
            "best_per_s": round(best.per_s, 1),
            "rounds_per_s": [round(r.per_s, 1) for r in runs],
            "failures": sum(r.failures for r in runs),
            # Near 1.0 means the peer server, not the side measured, set the pace.
            "peer_cpu_share": (
                None if best.peer_cpu_s is None else round(best.peer_cpu_s / best.elapsed_s, 2)
            ),
        }
    return result


def add_ratio(result: dict[str, Any], numerator: str, denominator: str) -> float | None:
    value = ratio(result[numerator]["best_per_s"], result[denominator]["best_per_s"])
    result[f"ratio_{numerator}_to_{denominator}"] = value
    return value


# -- 3. webhook ----------------------------------------------------------------------


def webhook_body() -> bytes:
    """A compact JSON body of the size relay sends (the slip fixture, re-encoded)."""
    return orjson.dumps(orjson.loads(FIXTURE.read_bytes()))


async def run_webhook(quick: bool = False) -> dict[str, Any]:
    count = WEBHOOK_COUNT // 4 if quick else WEBHOOK_COUNT
    print(
        f"[3] webhook: {count} POSTs, concurrency {WEBHOOK_CONCURRENCY}, best of {WEBHOOK_ROUNDS}"
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
            open_webhook_channel(
                timeout_s=TIMEOUT_S,
                concurrency=WEBHOOK_CONCURRENCY,
                allow_private_networks=True,
            ) as channel,
        ):
            sides = {
                "raw": raw_webhook_sender(session, url, body),
                "relay": relay_webhook_sender(channel, url, body),
            }
            result = await compare(sides, count, WEBHOOK_CONCURRENCY, sink, WEBHOOK_ROUNDS)
    add_ratio(result, "relay", "raw")
    _print_sides(result, {"raw": "raw aiohttp post", "relay": "WebhookChannel.send"}, "POST/s")
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


def relay_webhook_sender(channel: WebhookChannel, url: str, body: bytes) -> SendOne:
    async def send_one(index: int) -> bool:
        try:
            await channel.send(WebhookMessage(url, SECRET, f"msg_bench{index:08d}", body))
        except DeliveryError:
            return False
        return True

    return send_one


# -- 4. email ------------------------------------------------------------------------


def email_spec(index: int) -> EmailMessageSpec:
    """A message the size of relay's slip email: the Spanish templates, as text."""
    templates = ROOT / "templates"
    return EmailMessageSpec(
        to=TO,
        subject="Tu ficha OXXO para Curso de Repostería Profesional",
        text=(templates / "billet_printed.es.txt").read_text(encoding="utf-8"),
        html=(templates / "billet_printed.es.html").read_text(encoding="utf-8"),
        message_id=f"msg_bench{index:08d}",
    )


async def run_email(quick: bool = False) -> dict[str, Any]:
    count = EMAIL_COUNT // 4 if quick else EMAIL_COUNT
    one_shot_count = ONE_SHOT_COUNT // 4 if quick else ONE_SHOT_COUNT
    print(f"[4] email: {count} messages over {SMTP_POOL_SIZE} connections, best of {EMAIL_ROUNDS}")
    spec = email_spec(0)
    message = build_message(spec, FROM)  # "raw" sends this one prebuilt message throughout
    with tempfile.TemporaryDirectory(prefix="relay-bench-email-") as tmp:
        workdir = Path(tmp)
        port = free_port()
        config = EmailConfig.model_validate(
            {
                "from": FROM,
                "transport": "smtp",
                "smtp": {"host": HOST, "port": port, "pool_size": SMTP_POOL_SIZE},
            }
        )
        async with peer_process("smtp", port, workdir) as smtp:
            clients = [
                aiosmtplib.SMTP(hostname=HOST, port=port, timeout=TIMEOUT_S)
                for _ in range(SMTP_POOL_SIZE)
            ]
            try:
                for client in clients:
                    await client.connect()
                async with open_email_channel(
                    config, base_dir=workdir, timeout_s=TIMEOUT_S
                ) as channel:
                    sides = {
                        "raw": raw_pooled_sender(clients, lambda index: message),
                        # The same pool, building the MIME message per send as relay does:
                        # what is left between this and relay is the pool's own cost.
                        "raw_mime_per_message": raw_pooled_sender(
                            clients, lambda index: build_message(spec, FROM)
                        ),
                        "relay": relay_email_sender(channel, spec),
                    }
                    result = await compare(sides, count, SMTP_POOL_SIZE, smtp, EMAIL_ROUNDS)
            finally:
                for client in clients:
                    client.close()
            one_shot = await drive(
                one_shot_count, SMTP_POOL_SIZE, one_shot_sender(port, message), smtp
            )
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
        "relay": "relay SMTP pool",
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


def relay_email_sender(channel: EmailChannel, spec: EmailMessageSpec) -> SendOne:
    async def send_one(index: int) -> bool:
        try:
            await channel.send(
                EmailMessageSpec(spec.to, spec.subject, spec.text, spec.html, f"msg_{index}")
            )
        except DeliveryError:
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
            f"    {label:<20} {side['best_per_s']:8.0f} {unit}  rounds {side['rounds_per_s']}"
            f"  failures {side['failures']}  peer cpu {side['peer_cpu_share']}"
        )
