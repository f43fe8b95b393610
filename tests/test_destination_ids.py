"""Stable destination ids (issue 7 §2): the id, its checks, and the one-time rekey.

The end-to-end proof (reorder the TOML, restart, nothing moves) is in
tests/test_destination_reorder.py.
"""

from __future__ import annotations

import copy
import logging
import sqlite3
import tomllib
from pathlib import Path
from typing import Any

import pytest

from relay.config import ConfigError, parse_config
from relay.decide import decide
from relay.destination_ids import (
    derived_id,
    destination_key,
    id_problem,
    split_destination_key,
)
from relay.hotmart import parse_json_event
from relay.store.backend import open_store, positional_keys
from relay.store.queries import load_migrations
from relay.store.sqlite_statements import SQL_DIR
from relay.targets import DestinationIndex, find_destination
from tests.conftest import SECRET, build_config, fixture_json
from tests.test_cli import run_cli, write_toml

LUCIA = "K12345678M"


def lucia_with(raw: dict[str, Any], *destinations: dict[str, Any]) -> dict[str, Any]:
    raw = copy.deepcopy(raw)
    raw["producers"][0]["affiliates"][0]["destinations"] = list(destinations)
    return raw


def problems_of(raw: dict[str, Any], tmp_path: Path) -> dict[str, str]:
    with pytest.raises(ConfigError) as caught:
        build_config(raw, tmp_path)
    return dict(caught.value.problems)


MAIL = {"kind": "email", "to": "lucia@example.com"}
HOOK = {"kind": "webhook", "url": "https://lucia.example.com/h", "secret": SECRET}
WHERE = "producers.0.affiliates.0.destinations"


# --- the id --------------------------------------------------------------------------------


def test_a_derived_id_names_kind_and_address_never_position() -> None:
    assert derived_id("email", "lucia@example.com") == derived_id(
        "email", "Lucía <LUCIA@Example.com>"
    )
    assert derived_id("email", "lucia@example.com").startswith("email-")
    assert derived_id("webhook", "https://x.example/h").startswith("webhook-")
    # A URL's path may be case-sensitive: two paths are two receivers.
    assert derived_id("webhook", "https://x.example/H") != derived_id(
        "webhook", "https://x.example/h"
    )
    assert derived_id("email", "a@example.com") != derived_id("email", "b@example.com")
    assert id_problem(derived_id("webhook", "https://x.example/h")) is None


@pytest.mark.parametrize("good", ["mail", "crm", "a", "x-1_2", "a" * 32])
def test_good_ids(good: str) -> None:
    assert id_problem(good) is None


@pytest.mark.parametrize("bad", ["", "0", "1mail", "Mail", "my mail", "a/b", "a" * 33, "é"])
def test_bad_ids(bad: str) -> None:
    assert id_problem(bad) is not None


def test_keys_split_back_into_their_parts() -> None:
    key = destination_key("acme", "K/1", "mail")
    assert key == "acme/K/1/mail"
    assert split_destination_key(key) == ("acme", "K/1", "mail")
    for broken in ("acme", "acme/", "acme/K/", "/K/mail"):
        assert split_destination_key(broken) is None


# --- config --------------------------------------------------------------------------------


def test_an_id_in_the_config_names_the_key(config_dict: dict[str, Any], tmp_path: Path) -> None:
    raw = lucia_with(config_dict, {**MAIL, "id": "mail"}, HOOK)
    config = build_config(raw, tmp_path)
    mail, hook = config.producers[0].affiliates[0].destinations
    assert (mail.stable_id, hook.stable_id) == ("mail", derived_id("webhook", HOOK["url"]))
    found = find_destination(config, f"acme/{LUCIA}/mail")
    assert found is not None and found[2] is mail
    assert find_destination(config, f"acme/{LUCIA}/0") is None  # positions name nothing now
    assert find_destination(config, f"acme/{LUCIA}/nope") is None


def test_the_index_an_attempt_uses_finds_what_the_walk_finds(
    config_dict: dict[str, Any], tmp_path: Path
) -> None:
    config = build_config(lucia_with(config_dict, {**MAIL, "id": "mail"}, HOOK), tmp_path)
    index = DestinationIndex(config)
    keys = [
        destination_key(producer.id, affiliate.code, destination.stable_id)
        for producer in config.producers
        for affiliate in producer.affiliates
        for destination in affiliate.destinations
    ]
    assert len(keys) > 3
    for key in [*keys, f"acme/{LUCIA}/0", f"acme/{LUCIA}/nope", "not-a-key", "other/K/mail"]:
        assert index.find(key) == find_destination(config, key), key


def test_a_bad_id_is_reported_at_its_dotted_path(
    config_dict: dict[str, Any], tmp_path: Path
) -> None:
    problems = problems_of(lucia_with(config_dict, MAIL, {**HOOK, "id": "0"}), tmp_path)
    assert "is not a destination id" in problems[f"{WHERE}.1.id"]


def test_two_destinations_with_one_id_are_reported(
    config_dict: dict[str, Any], tmp_path: Path
) -> None:
    raw = lucia_with(
        config_dict,
        {**MAIL, "id": "main"},
        HOOK,
        {**HOOK, "url": "https://b.example/h", "id": "main"},
    )
    problems = problems_of(raw, tmp_path)
    assert problems == {
        f"{WHERE}.2.id": f"duplicate of {WHERE}.0.id ('main'): an id is unique within its affiliate"
    }


def test_one_address_twice_asks_for_an_id_each(config_dict: dict[str, Any], tmp_path: Path) -> None:
    twice = lucia_with(config_dict, MAIL, HOOK, {**MAIL, "to": "LUCIA@example.com"})
    problems = problems_of(twice, tmp_path)
    (reason,) = problems.values()
    assert list(problems) == [f"{WHERE}.2.id"]
    assert f"same key as {WHERE}.0" in reason and "give each an `id`" in reason
    # Named apart, they are two destinations; and another affiliate may share the address.
    build_config(lucia_with(config_dict, MAIL, {**MAIL, "id": "copy"}), tmp_path)
    raw = lucia_with(config_dict, MAIL)
    raw["producers"][0]["affiliates"][1]["destinations"] = [MAIL]
    build_config(raw, tmp_path)


def test_duplicate_ids_are_reported_beside_field_errors(tmp_path: Path) -> None:
    raw = {
        "producers": [
            {
                "id": "acme",
                "hottok": "t",
                "affiliates": [
                    {"code": "A", "destinations": [MAIL, MAIL, {"kind": "email", "to": 7}]},
                ],
            }
        ]
    }
    problems = problems_of(raw, tmp_path)
    assert "give each an `id`" in problems["producers.0.affiliates.0.destinations.1.id"]
    assert "producers.0.affiliates.0.destinations.2.to" in problems


def test_a_decision_keeps_its_key_wherever_the_destination_moves(tmp_path: Path) -> None:
    raw = {
        "producers": [
            {
                "id": "acme",
                "hottok": "t",
                "affiliates": [{"code": LUCIA, "buyer_data": True, "destinations": [MAIL, HOOK]}],
            }
        ]
    }
    event = parse_json_event(fixture_json("billet_printed_oxxo.json"))
    before = decide(build_config(raw, tmp_path).producers[0], event)
    raw["producers"][0]["affiliates"][0]["destinations"] = [
        {"kind": "email", "to": "new@example.com"},
        HOOK,
        MAIL,
    ]
    after = decide(build_config(raw, tmp_path).producers[0], event)
    channel_by_key = {d.destination_key: d.channel for d in after}
    assert all(channel_by_key[d.destination_key] == d.channel for d in before)


# --- the one-time rekey of positional keys ------------------------------------------------


def old_store(db: Path) -> None:
    """A store as the relay before ids left it: migrations 1 and 2, positional keys."""
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute(
        "CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at_ms INTEGER NOT NULL)"
    )
    for version, script in load_migrations(SQL_DIR):
        if version <= 2:
            conn.executescript(script)
            conn.execute("INSERT INTO schema_version VALUES (?, 1)", (version,))
    conn.execute(
        "INSERT INTO events (id, producer_id, hotmart_id, event_name, source, outcome,"
        " payload_json, received_at_ms) VALUES (1, 'acme', 'e1', 'E', '2.0.0', 'accepted', '{}', 1)"
    )
    rows = [
        (f"acme/{LUCIA}/0", "email", "pending"),
        (f"acme/{LUCIA}/1", "webhook", "failed"),
        (f"alert:acme/{LUCIA}/1", "email", "delivered"),
        (f"acme/{LUCIA}/7", "webhook", "pending"),  # a destination gone before the upgrade
        (None, None, "withheld"),
    ]
    for n, (key, channel, status) in enumerate(rows):
        conn.execute(
            "INSERT INTO deliveries (event_id, producer_id, destination_key, channel, event_name,"
            " status, message_id, created_at_ms, updated_at_ms)"
            " VALUES (1, 'acme', ?, ?, 'E', ?, ?, 1, 1)",
            (key, channel, status, f"m{n}"),
        )
    conn.execute(
        "INSERT INTO destinations (key, enabled, disabled_reason) VALUES (?, 0, 'held')",
        (f"acme/{LUCIA}/1",),
    )
    conn.close()


def stored_keys(db: Path) -> tuple[list[Any], list[Any]]:
    conn = sqlite3.connect(db)
    try:
        deliveries = conn.execute("SELECT destination_key FROM deliveries ORDER BY id").fetchall()
        destinations = conn.execute("SELECT key, enabled FROM destinations").fetchall()
    finally:
        conn.close()
    return [k for (k,) in deliveries], destinations


async def test_the_first_open_after_the_upgrade_moves_positions_to_ids_once(
    config_dict: dict[str, Any], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "relay.sqlite3"
    old_store(db)
    raw = lucia_with(config_dict, MAIL, {**HOOK, "id": "crm"})
    config = build_config(raw, tmp_path)
    mail_key = f"acme/{LUCIA}/{derived_id('email', MAIL['to'])}"
    assert positional_keys(config)[f"acme/{LUCIA}/0"] == mail_key
    caplog.set_level(logging.INFO)
    async with open_store(config):
        pass
    deliveries, destinations = stored_keys(db)
    assert deliveries == [
        mail_key,
        f"acme/{LUCIA}/crm",
        f"acme/{LUCIA}/crm",  # the alert about it: an alert is keyed by its destination
        f"acme/{LUCIA}/7",  # no destination sat there: left, and named in the log
        None,
    ]
    assert destinations == [(f"acme/{LUCIA}/crm", 0)]
    assert "3 deliveries and 1 destination records moved from positions to ids" in caplog.text
    assert "left as they were (their pending deliveries fail" in caplog.text
    assert f"acme/{LUCIA}/7" in caplog.text

    # It ran once: a config reordered later changes no key in the store.
    reordered = lucia_with(config_dict, {**HOOK, "id": "crm"}, MAIL)
    async with open_store(build_config(reordered, tmp_path)):
        pass
    assert stored_keys(db) == (deliveries, destinations)
    conn = sqlite3.connect(db)
    ((detail,),) = conn.execute("SELECT detail FROM one_time_steps").fetchall()
    conn.close()
    assert detail.startswith("3 deliveries and 1 destinations moved to id keys")


async def test_a_new_store_records_the_rekey_as_done(
    config_dict: dict[str, Any], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = build_config(config_dict, tmp_path)
    caplog.set_level(logging.INFO)
    async with open_store(config):
        pass
    assert "destination keys" not in caplog.text  # nothing to say on a new store
    conn = sqlite3.connect(tmp_path / "relay.sqlite3")
    assert conn.execute("SELECT name FROM one_time_steps").fetchall() == [("destination ids",)]
    conn.close()


def test_the_example_config_names_its_destinations() -> None:
    example = Path(__file__).resolve().parent.parent / "config.example.toml"
    raw = tomllib.loads(example.read_text(encoding="utf-8"))
    config = parse_config(raw, {}, base_dir=example.parent)
    ids = [d.id for p in config.producers for a in p.affiliates for d in a.destinations]
    assert ids and all(ids)


def test_an_id_must_be_a_string_and_a_key_must_have_three_parts(
    config_dict: dict[str, Any], tmp_path: Path
) -> None:
    assert id_problem(5) == "must be a string"
    assert find_destination(build_config(config_dict, tmp_path), "not-a-key") is None


async def test_send_test_picks_a_destination_by_id(
    config_dict: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = lucia_with(config_dict, MAIL, {"kind": "email", "id": "other", "to": "o@example.com"})
    path = write_toml(raw, tmp_path / "relay.toml")
    assert await run_cli(path, "send-test", "--affiliate", LUCIA, "--destination", "other") == 0
    assert f"-> acme/{LUCIA}/other: delivered" in capsys.readouterr().out
    (sent,) = (tmp_path / "mail" / "new").iterdir()
    assert "o@example.com" in sent.read_text(encoding="utf-8")
    # A position is not an id: the error lists the ids there are.
    assert await run_cli(path, "send-test", "--affiliate", LUCIA, "--destination", "0") == 2
    mail_id = derived_id("email", MAIL["to"])
    assert f"has no destination '0'; its destination ids: {mail_id}, other" in (
        capsys.readouterr().err
    )
