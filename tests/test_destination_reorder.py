"""Reordering destinations in the TOML moves nothing (issue 7 §2, the brief's "done when").

Black-box on purpose: keys are read from `relay destinations --json` by target, never
computed here, so this test runs unchanged against the positional keys of before (and
fails there: the disabled flag and the queued deliveries moved to a neighbour).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SECRET, build_config, fixture_json
from tests.peers import SmtpRecorder, WebhookSink, smtp_server, status, wait_until, webhook_sink
from tests.test_cli import run_cli, write_toml
from tests.test_delivery import history
from tests.test_ingest import post_json

LUCIA = "K12345678M"


def config_with(
    raw: dict[str, Any], smtp_port: int, destinations: list[dict[str, Any]]
) -> dict[str, Any]:
    """acme with Lucía's `destinations`, real SMTP, and retries an hour apart (so a failed
    first attempt stays queued across the restart)."""
    raw = copy.deepcopy(raw)
    raw["email"] = {
        "from": "Relay <relay@example.com>",
        "transport": "smtp",
        "smtp": {"host": "127.0.0.1", "port": smtp_port, "pool_size": 1},
    }
    raw["delivery"]["retry_delays"] = ["1h"]
    lucia = next(a for a in raw["producers"][0]["affiliates"] if a["code"] == LUCIA)
    lucia["events"] = ["PURCHASE_BILLET_PRINTED"]
    lucia["destinations"] = destinations
    return raw


async def listed(path: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, dict[str, Any]]:
    """`relay destinations --json`, by target ("email a@b" or "webhook URL")."""
    capsys.readouterr()
    assert await run_cli(path, "destinations", "--json") == 0
    out = capsys.readouterr().out
    rows = json.loads(out[out.index("[") :])
    return {row["target"]: row for row in rows if f"/{LUCIA}/" in row["key"]}


async def first_attempts_made(client: Any) -> bool:
    rows = await history(client, affiliate_code=LUCIA)
    return len(rows) == 3 and all(r.attempts == 1 or r.status == "skipped" for r in rows)


async def test_reordering_and_inserting_destinations_moves_nothing(
    relay_client: Any,
    config_dict: dict[str, Any],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    async with smtp_server() as (recorder, smtp_port), webhook_sink() as sink:
        await _run(relay_client, config_dict, tmp_path, capsys, recorder, smtp_port, sink)


async def _run(
    relay_client: Any,
    config_dict: dict[str, Any],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    recorder: SmtpRecorder,
    smtp_port: int,
    sink: WebhookSink,
) -> None:
    mail = {"kind": "email", "to": "lucia@example.com"}
    hook1 = {"kind": "webhook", "url": sink.url("/hook1"), "secret": SECRET}
    hook2 = {"kind": "webhook", "url": sink.url("/hook2"), "secret": SECRET}
    before = config_with(config_dict, smtp_port, [mail, hook1, hook2])
    path = write_toml(before, tmp_path / "relay.toml")

    # First run: hook2 disabled by an operator; the email and hook1 fail once and wait.
    client = await relay_client(build_config(before, tmp_path))
    hook2_key = (await listed(path, capsys))[f"webhook {hook2['url']}"]["key"]
    assert await run_cli(path, "destinations", "--disable", hook2_key) == 0
    recorder.script.append("451 try again later")
    sink.on("/hook1", status(503))
    await post_json(client, fixture_json("billet_printed_oxxo.json"))
    await wait_until(lambda: first_attempts_made(client))
    queued = {r.channel: r for r in await history(client, affiliate_code=LUCIA, status="pending")}
    assert set(queued) == {"email", "webhook"}
    await client.close()

    # The operator reorders the list and inserts a destination in the middle; restart.
    zed = {"kind": "email", "to": "zed@example.com"}
    after = config_with(config_dict, smtp_port, [hook2, zed, hook1, mail])
    write_toml(after, path)
    client = await relay_client(build_config(after, tmp_path))

    shown = await listed(path, capsys)
    assert shown[f"webhook {hook2['url']}"]["enabled"] is False
    assert shown[f"webhook {hook2['url']}"]["key"] == hook2_key
    assert shown[f"webhook {hook1['url']}"]["enabled"] is True
    assert shown["email lucia@example.com"]["enabled"] is True
    assert shown["email zed@example.com"]["enabled"] is True

    # The queued deliveries go where they were going, by the channel they were for.
    ids = [str(queued["email"].id), str(queued["webhook"].id)]
    assert await run_cli(path, "replay", *ids) == 0
    assert len(recorder.to("lucia@example.com")) == 1
    assert recorder.to("zed@example.com") == []
    hits = sink.at("/hook1")
    assert len(hits) == 2 and hits[0].headers["webhook-id"] == hits[1].headers["webhook-id"]
    assert sink.at("/hook2") == []
    rows = {r.id: r for r in await history(client, affiliate_code=LUCIA)}
    assert [(rows[int(i)].status, rows[int(i)].channel) for i in ids] == [
        ("delivered", "email"),
        ("delivered", "webhook"),
    ]
