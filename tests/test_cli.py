"""The operator's commands against a real database, with the relay serving beside them."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from relay.cli import main
from relay.config import Config
from relay.logs import uninstall
from tests.conftest import SECRET, build_config, fixture_json, key_of, relay_of
from tests.peers import WebhookSink, status, wait_until, webhook_sink
from tests.test_delivery import settled
from tests.test_ingest import post_json


@pytest.fixture(autouse=True)
def _log_handler_removed_after() -> Iterator[None]:
    """`main` installs the relay's log handler for good; a test leaves none behind."""
    yield
    uninstall()


def write_toml(config_dict: dict[str, Any], path: Path) -> Path:
    """A minimal TOML writer for the test configs (strings, numbers, bools, lists, tables)."""

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int | float):
            return str(v)
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return json.dumps(v)

    lines: list[str] = []

    def table(name: str, body: dict[str, Any], array: bool = False) -> None:
        lines.append(f"[[{name}]]" if array else f"[{name}]")
        nested = []
        for key, v in body.items():
            if isinstance(v, dict):
                nested.append((key, v, False))
            elif isinstance(v, list) and v and isinstance(v[0], dict):
                nested.append((key, v, True))
            else:
                lines.append(f"{key} = {value(v)}")
        for key, v, is_array in nested:
            if is_array:
                for item in v:
                    table(f"{name}.{key}", item, array=True)
            else:
                table(f"{name}.{key}", v)

    for key, v in config_dict.items():
        if isinstance(v, list):
            for item in v:
                table(key, item, array=True)
        else:
            table(key, v)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


async def run_cli(config_path: Path, *args: str) -> int:
    """`relay ...` in a worker thread (its own event loop), beside the serving relay."""
    return await asyncio.to_thread(main, ["--config", str(config_path), *args])


async def serving(relay_client: Any, raw: dict[str, Any], tmp_path: Path) -> tuple[Any, Path]:
    config: Config = build_config(raw, tmp_path)
    return await relay_client(config), write_toml(raw, tmp_path / "relay.toml")


async def test_history_lists_decisions_with_reasons(
    relay_client: Any,
    config_dict: dict[str, Any],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    client, path = await serving(relay_client, config_dict, tmp_path)
    for name in (
        "billet_printed_oxxo.json",
        "test_button_billet_printed.json",
        "billet_printed_no_affiliate.json",
    ):
        await post_json(client, fixture_json(name))
    await wait_until(lambda: settled(client))
    capsys.readouterr()

    assert await run_cli(path, "history") == 0
    table = capsys.readouterr().out
    assert "delivered" in table and "ignored" in table and "skipped" in table
    assert "test button" in table and "direct sale" in table

    assert await run_cli(path, "history", "--status", "skipped", "--json") == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["status"] for r in rows] == ["skipped"]
    assert rows[0]["affiliate_code"] == "Q58388177J"

    assert await run_cli(path, "history", "--affiliate", "K12345678M", "--json") == 0
    assert {r["affiliate_code"] for r in json.loads(capsys.readouterr().out)} == {"K12345678M"}

    assert await run_cli(path, "history", "--event", "PURCHASE_APPROVED", "--json") == 0
    assert json.loads(capsys.readouterr().out) == []

    assert await run_cli(path, "history", "--limit", "1") == 0
    assert "relay history --before" in capsys.readouterr().out


async def test_show_lists_every_attempt_with_payload_and_response(
    relay_client: Any,
    config_dict: dict[str, Any],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    async with webhook_sink() as sink:
        client, path = await settled_against(
            relay_client, config_dict, tmp_path, sink, [status(500), status(200)], "oxxo"
        )
        rows = await relay_of(client).store.history(_filter(channel="webhook"))
        capsys.readouterr()
        assert await run_cli(path, "show", str(rows[0].id)) == 0
    out = capsys.readouterr().out
    assert "attempt 1" in out and "attempt 2" in out
    assert "status 500" in out and "status 200" in out
    assert "HP1764271200123" in out  # the payload sent
    assert "status 500" in out
    assert await run_cli(path, "show", "999999") == 1


def with_webhook(raw: dict[str, Any], sink: WebhookSink) -> dict[str, Any]:
    raw["producers"][0]["affiliates"][0]["destinations"] = [
        {"kind": "webhook", "url": sink.url("/hook"), "secret": SECRET}
    ]
    return raw


async def settled_against(
    relay_client: Any,
    raw: dict[str, Any],
    tmp_path: Path,
    sink: WebhookSink,
    replies: list[Any],
    *slips: str,
) -> tuple[Any, Path]:
    """Serve with Lucía's webhook answering `replies`, post `slips`, wait until settled."""
    sink.on("/hook", *replies)
    client, path = await serving(relay_client, with_webhook(raw, sink), tmp_path)
    for slip in slips:
        await post_json(client, fixture_json(f"billet_printed_{slip}.json"))
    await wait_until(lambda: settled(client))
    return client, path


def _filter(**kwargs: Any) -> Any:
    from relay.records import HistoryFilter

    return HistoryFilter(limit=100, **kwargs)


async def test_replay_sends_a_failed_delivery_again_with_the_same_id(
    relay_client: Any,
    config_dict: dict[str, Any],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    async with webhook_sink() as sink:
        client, path = await settled_against(
            relay_client, config_dict, tmp_path, sink, [status(500)] * 5, "oxxo"
        )
        (failed,) = await relay_of(client).store.history(_filter(status="failed"))
        assert failed.attempts == 5
        capsys.readouterr()

        assert await run_cli(path, "replay", str(failed.id)) == 0
        captured = capsys.readouterr()
        assert "1/1" in captured.err  # the progress bar
        key = key_of(config_dict, "K12345678M")  # with_webhook set Lucía's destination
        assert f"delivery {failed.id} -> {key}: delivered" in captured.out
        hits = sink.at("/hook")
        assert len(hits) == 6
        assert {h.headers["webhook-id"] for h in hits} == {failed.message_id}

        # Nothing failed since: --failed finds nothing to do; a withheld row is refused.
        assert await run_cli(path, "replay", "--failed", "--since", "1h") == 0
        assert await run_cli(path, "replay") == 2


async def test_replay_failed_since(
    relay_client: Any,
    config_dict: dict[str, Any],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    async with webhook_sink() as sink:
        client, path = await settled_against(
            relay_client, config_dict, tmp_path, sink, [status(503)] * 10, "oxxo", "baloto"
        )
        assert len(await relay_of(client).store.history(_filter(status="failed"))) == 2
        assert await run_cli(path, "replay", "--failed", "--since", "1h") == 0
        assert await relay_of(client).store.history(_filter(status="failed")) == []


async def test_replay_of_a_withheld_row_decides_again_and_keeps_it_withheld(
    relay_client: Any,
    config_dict: dict[str, Any],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    client, path = await serving(relay_client, config_dict, tmp_path)
    payload = fixture_json("billet_printed_oxxo.json")
    payload["data"]["affiliates"] = [{"affiliate_code": "P0000000NP", "name": "x"}]
    await post_json(client, payload)
    (row,) = await relay_of(client).store.history(_filter())
    assert row.status == "withheld"
    assert await run_cli(path, "replay", str(row.id)) == 1
    assert "still withheld: decided again: affiliate is not permitted" in capsys.readouterr().out


async def test_send_test_goes_through_the_real_channel_and_is_recorded(
    relay_client: Any,
    config_dict: dict[str, Any],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    client, path = await serving(relay_client, config_dict, tmp_path)
    assert await run_cli(path, "send-test", "--affiliate", "K12345678M") == 0
    (eml,) = (tmp_path / "mail" / "new").iterdir()
    text = eml.read_text(encoding="utf-8")
    assert "[PRUEBA]" in text
    (row,) = await relay_of(client).store.history(_filter())
    assert (row.kind, row.status) == ("test", "delivered")
    assert await run_cli(path, "send-test", "--affiliate", "NOPE") == 2
    assert await run_cli(path, "send-test", "--affiliate", "K12345678M", "--destination", "7") == 2


async def test_destinations_lists_health_and_switches(
    relay_client: Any,
    config_dict: dict[str, Any],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    client, path = await serving(relay_client, config_dict, tmp_path)
    capsys.readouterr()
    lucia = key_of(config_dict, "K12345678M")
    assert await run_cli(path, "destinations", "--disable", lucia) == 0
    assert await run_cli(path, "destinations", "--json") == 0
    out = capsys.readouterr().out
    listed = {row["key"]: row for row in json.loads(out[out.index("[") :])}
    assert listed[lucia]["enabled"] is False
    assert listed[key_of(config_dict, "P98765432X")]["enabled"] is True

    # A slip for a disabled destination is skipped, and replayable once enabled again.
    await post_json(client, fixture_json("billet_printed_oxxo.json"))
    await wait_until(lambda: settled(client))
    (row,) = await relay_of(client).store.history(_filter(affiliate_code="K12345678M"))
    assert row.status == "skipped"
    assert await run_cli(path, "destinations", "--enable", lucia) == 0
    assert await run_cli(path, "replay", str(row.id)) == 0
    (row,) = await relay_of(client).store.history(_filter(affiliate_code="K12345678M"))
    assert row.status == "delivered"

    assert await run_cli(path, "destinations") == 0
    assert f"{lucia}  email lucia@example.com  enabled" in capsys.readouterr().out
    assert await run_cli(path, "destinations", "--enable", "acme/NOPE/0") == 2


def test_broken_template_override_fails_check_config_and_serve(
    config_dict: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    overrides = tmp_path / "acme-templates"
    overrides.mkdir()
    (overrides / "billet_printed.es.html").write_text("<p>{{ event.product.name </p>")
    config_dict["producers"][0]["templates_dir"] = str(overrides)
    path = write_toml(config_dict, tmp_path / "relay.toml")
    assert main(["--config", str(path), "check-config"]) == 2
    err = capsys.readouterr().err
    assert "producer acme templates: billet_printed.es.html" in err
    assert "Traceback" not in err
    assert main(["--config", str(path), "serve"]) == 2  # refuses before it binds the port

    (overrides / "billet_printed.es.html").write_text("<p>{{ event.product.name }}</p>")
    assert main(["--config", str(path), "check-config"]) == 0
    assert "config ok" in capsys.readouterr().out


def test_config_may_come_before_or_after_the_command(
    config_dict: dict[str, Any],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = write_toml(config_dict, tmp_path / "relay.toml")
    assert main(["check-config", "--config", str(path)]) == 0  # as `make run` writes it
    assert main(["--config", str(path), "check-config"]) == 0
    monkeypatch.setenv("RELAY_CONFIG", str(path))
    assert main(["check-config"]) == 0
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RELAY_CONFIG")
    assert main(["check-config"]) == 0  # ./relay.toml
    assert capsys.readouterr().out.count("config ok") == 4


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["history", "--since", "banana"], "'banana' is neither a duration ago"),
        (["history", "--since", "0000-01-01"], "--since"),
        (["history", "--limit", "0"], "must be a whole number of 1 or more"),
        (["history", "--limit", "many"], "--limit"),
        (["history", "--before", "-3"], "--before"),
        (["history", "--status", "lost"], "--status"),
        (["history", "--channel", "fax"], "--channel"),
        (["replay", "--failed", "--since", "banana"], "'banana'"),
        (["show", "seven"], "seven"),
        (["replay", "1", "x"], "'x'"),
    ],
)
def test_a_flag_value_that_does_not_parse_is_a_clear_error_and_exit_2(
    config_dict: dict[str, Any],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    says: str,
) -> None:
    path = write_toml(config_dict, tmp_path / "relay.toml")
    assert main(["--config", str(path), *argv]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "error:" in err and says in err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    from importlib.metadata import version

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"relay {version('relay')}"


async def test_history_finds_an_event_by_transaction_or_hotmart_id(
    relay_client: Any,
    config_dict: dict[str, Any],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    client, path = await serving(relay_client, config_dict, tmp_path)
    for name in ("billet_printed_oxxo.json", "billet_printed_baloto.json"):
        await post_json(client, fixture_json(name))
    capsys.readouterr()

    assert await run_cli(path, "history", "--transaction", "HP1764271200123", "--json") == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows and {r["transaction_code"] for r in rows} == {"HP1764271200123"}

    oxxo_id = fixture_json("billet_printed_oxxo.json")["id"]
    assert await run_cli(path, "history", "--hotmart-id", oxxo_id, "--json") == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows and {r["hotmart_id"] for r in rows} == {oxxo_id}

    both = ("--hotmart-id", oxxo_id, "--transaction", "HP1764271300456")
    assert await run_cli(path, "history", *both) == 0
    assert capsys.readouterr().out.strip() == "no deliveries match these filters"


async def test_an_empty_history_says_why_it_is_empty(
    relay_client: Any,
    config_dict: dict[str, Any],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    client, path = await serving(relay_client, config_dict, tmp_path)
    capsys.readouterr()
    assert await run_cli(path, "history") == 0
    assert capsys.readouterr().out.strip() == "no deliveries yet"
    assert await run_cli(path, "history", "--affiliate", "K12345678M") == 0
    assert capsys.readouterr().out.strip() == "no deliveries yet"  # nothing at all, filter or not

    await post_json(client, fixture_json("billet_printed_oxxo.json"))
    for argv in (["--affiliate", "NOPE"], ["--status", "failed"], ["--since", "2030-01-01"]):
        assert await run_cli(path, "history", *argv) == 0
        assert capsys.readouterr().out.strip() == "no deliveries match these filters"
    assert await run_cli(path, "history", "--affiliate", "NOPE", "--json") == 0
    assert json.loads(capsys.readouterr().out) == []
