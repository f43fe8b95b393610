"""`relay backup PATH`: a consistent online copy, taken while a relay ingests and sends."""

from __future__ import annotations

import asyncio
import copy
import sqlite3
import stat
import threading
from pathlib import Path
from typing import Any

import pytest

from relay.commands.maintain import _publish
from relay.store.sqlite import open_sqlite_store
from tests.acceptance.harness import Relay, relay_config, running, wait_for
from tests.conftest import HOTTOK, build_config, fixture_json, relay_of
from tests.test_cli import run_cli, write_toml
from tests.test_ingest import post_json

DESTINATIONS = 3  # every event of the stream makes this many delivery rows


def streaming_config(raw: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    """Lucía gets each slip at three maildir addresses: one event, three delivery rows."""
    raw = copy.deepcopy(raw)
    lucia = raw["producers"][0]["affiliates"][0]
    lucia["destinations"] = [
        {"kind": "email", "to": f"lucia{n}@example.com"} for n in range(DESTINATIONS)
    ]
    return raw


def slip(n: int) -> dict[str, Any]:
    body = fixture_json("billet_printed_oxxo.json")
    body["id"] = f"stream-{n}"
    return body


async def committed_events(store: Any) -> int:
    return sum((await store.count_by_status()).values()) // DESTINATIONS


def copy_facts(path: Path) -> dict[str, Any]:
    """Open the copy on its own and read what a restore would rely on."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return {
            "integrity": conn.execute("PRAGMA integrity_check").fetchall(),
            "journal_mode": conn.execute("PRAGMA journal_mode").fetchone()[0],
            "event_ids": [r[0] for r in conn.execute("SELECT id FROM events ORDER BY id")],
            "rows_per_event": {
                r[0]
                for r in conn.execute(
                    "SELECT COUNT(d.id) FROM events e LEFT JOIN deliveries d ON d.event_id = e.id"
                    " GROUP BY e.id"
                )
            },
            # An attempt and its delivery's move are one transaction: never one without
            # the other in a copy.
            "attempts_mismatched": conn.execute(
                "SELECT COUNT(*) FROM deliveries d WHERE d.attempts !="
                " (SELECT COUNT(*) FROM attempts a WHERE a.delivery_id = d.id)"
            ).fetchone()[0],
        }
    finally:
        conn.close()


async def test_a_backup_taken_while_events_stream_in_is_a_consistent_prefix(
    relay_client: Any,
    config_dict: dict[str, Any],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    raw = streaming_config(config_dict, tmp_path)
    client = await relay_client(build_config(raw, tmp_path))
    path = write_toml(raw, tmp_path / "relay.toml")
    store = relay_of(client).store
    posted = 0
    stop = asyncio.Event()

    async def poster(worker: int) -> None:
        nonlocal posted
        n = worker
        while not stop.is_set():
            response = await post_json(client, slip(n), HOTTOK)
            assert response.status == 200, await response.text()
            posted += 1
            n += 4

    posters = [asyncio.create_task(poster(w)) for w in range(4)]
    try:
        copies = []
        for round_no in range(3):
            while posted < 20 * (round_no + 1):
                await asyncio.sleep(0.01)
            before = await committed_events(store)
            target = tmp_path / "backups" / f"copy-{round_no}.sqlite3"
            target.parent.mkdir(exist_ok=True)
            assert await run_cli(path, "backup", str(target)) == 0
            copies.append((target, before, await committed_events(store)))
    finally:
        stop.set()
        await asyncio.gather(*posters)
    out = capsys.readouterr().out
    assert out.count("integrity ok") == 3

    for target, before, after in copies:
        facts = copy_facts(target)
        assert facts["integrity"] == [("ok",)]
        assert facts["journal_mode"] == "delete"  # one file, no -wal beside it
        ids = facts["event_ids"]
        assert before <= len(ids) <= after
        assert ids == list(range(1, len(ids) + 1))  # a prefix: no event missing
        assert facts["rows_per_event"] == {DESTINATIONS}  # each event with all its rows
        assert facts["attempts_mismatched"] == 0
        assert stat.S_IMODE(target.stat().st_mode) == 0o600  # it holds buyer data
    assert sorted(p.name for p in (tmp_path / "backups").iterdir()) == [
        "copy-0.sqlite3",
        "copy-1.sqlite3",
        "copy-2.sqlite3",
    ]  # nothing partial left behind


async def test_a_backup_opens_as_a_store(
    config_dict: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Restoring is copying the file back: the relay's own commands read it."""
    path = write_toml(config_dict, tmp_path / "relay.toml")
    async with open_sqlite_store(tmp_path / "relay.sqlite3"):
        pass
    target = tmp_path / "copy.sqlite3"
    assert await run_cli(path, "backup", str(target)) == 0

    restored = copy.deepcopy(config_dict)
    restored["storage"]["sqlite_path"] = str(target)
    capsys.readouterr()
    assert await run_cli(write_toml(restored, tmp_path / "restored.toml"), "history") == 0
    assert "no deliveries yet" in capsys.readouterr().out


@pytest.fixture
async def relay_toml(config_dict: dict[str, Any], tmp_path: Path) -> Path:
    """A config whose store exists and holds one event."""
    config = build_config(config_dict, tmp_path)
    async with open_sqlite_store(config.resolve_path(config.storage.sqlite_path)):
        pass
    return write_toml(config_dict, tmp_path / "relay.toml")


async def test_an_existing_file_is_replaced_only_with_force(
    relay_toml: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "keep.sqlite3"
    target.write_text("an older backup")
    target.chmod(0o644)

    assert await run_cli(relay_toml, "backup", str(target)) == 2
    assert "exists; give --force" in capsys.readouterr().err
    assert target.read_text() == "an older backup"

    assert await run_cli(relay_toml, "backup", str(target), "--force") == 0
    assert copy_facts(target)["integrity"] == [("ok",)]
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


@pytest.mark.parametrize("name", ["relay.sqlite3", "relay.sqlite3-wal", "."])
async def test_the_store_itself_or_a_directory_is_refused(
    relay_toml: Path, tmp_path: Path, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    before = (tmp_path / "relay.sqlite3").read_bytes()

    assert await run_cli(relay_toml, "backup", str(tmp_path / name), "--force") == 2
    assert "relay backup:" in capsys.readouterr().err
    assert (tmp_path / "relay.sqlite3").read_bytes() == before


async def test_a_missing_store_fails_and_is_not_created(
    config_dict: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_toml(config_dict, tmp_path / "relay.toml")

    assert await run_cli(path, "backup", str(tmp_path / "copy.sqlite3")) == 1
    assert "no store at" in capsys.readouterr().err
    assert not (tmp_path / "relay.sqlite3").exists()
    assert not (tmp_path / "copy.sqlite3").exists()


async def test_a_missing_directory_fails(
    relay_toml: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await run_cli(relay_toml, "backup", str(tmp_path / "nowhere" / "c.sqlite3")) == 1
    assert "cannot write beside" in capsys.readouterr().err


async def test_a_corrupt_store_gives_no_backup(
    relay_toml: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A copy that fails its integrity check is not published, and nothing is left over."""
    db = tmp_path / "relay.sqlite3"
    conn = sqlite3.connect(db)
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'events'").fetchone()[0]
    conn.close()
    with db.open("r+b") as f:  # scribble over the events table's first page, past its header
        f.seek((root - 1) * page_size)
        f.write(b"\x0d" + b"\xff" * 64)
    backups = tmp_path / "backups"
    backups.mkdir()

    assert await run_cli(relay_toml, "backup", str(backups / "c.sqlite3")) == 1
    # Opening the store may already find the damage (it reads its tables at open), or the
    # copy's integrity check does: either way it is refused, and nothing is published.
    err = capsys.readouterr().err
    assert "failed" in err and ("not sound" in err or "malformed" in err), err
    assert list(backups.iterdir()) == []


async def test_backup_needs_a_path(relay_toml: Path) -> None:
    assert await run_cli(relay_toml, "backup") == 2


def test_a_file_that_appears_during_the_copy_is_never_replaced(tmp_path: Path) -> None:
    partial, target = tmp_path / ".c.partial", tmp_path / "c.sqlite3"
    partial.write_text("the copy")
    target.write_text("made by someone else meanwhile")

    with pytest.raises(FileExistsError):
        _publish(partial, target, force=False)

    assert target.read_text() == "made by someone else meanwhile"


@pytest.mark.parametrize("present", [False, True])
def test_without_hard_links_the_copy_is_renamed_only_onto_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, present: bool
) -> None:
    """Some filesystems (SMB, some FUSE) refuse link(2): then check and rename instead."""

    def no_links(src: Any, dst: Any) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr("relay.commands.maintain.os.link", no_links)
    partial, target = tmp_path / ".c.partial", tmp_path / "c.sqlite3"
    partial.write_text("the copy")
    if present:
        target.write_text("older")
        with pytest.raises(FileExistsError):
            _publish(partial, target, force=False)
        assert target.read_text() == "older"
    else:
        _publish(partial, target, force=False)
        assert target.read_text() == "the copy" and not partial.exists()


def test_a_backup_by_one_process_while_relay_serve_ingests_in_another(tmp_path: Path) -> None:
    """The same, as deployed: `relay serve` and `relay backup` each a process of its own,
    so the snapshot and the writes meet through SQLite's file locks."""
    raw = streaming_config(relay_config(tmp_path), tmp_path)
    stop = threading.Event()
    posted: list[int] = []

    def poster(relay: Relay) -> None:
        n = 0
        while not stop.is_set():
            assert relay.post(slip(n)).status == 200
            posted.append(n)
            n += 1

    with running(Relay.from_config(raw, tmp_path)) as relay:
        thread = threading.Thread(target=poster, args=(relay,))
        thread.start()
        try:
            wait_for(lambda: len(posted) >= 20, timeout_s=60, what="20 events posted")
            target = tmp_path / "copy.sqlite3"
            done = relay.cli("backup", str(target))
            at_least = len(posted)  # posted in full before the backup returned
        finally:
            stop.set()
            thread.join()
    assert done.returncode == 0, done.stderr
    facts = copy_facts(target)
    assert facts["integrity"] == [("ok",)]
    assert facts["event_ids"] == list(range(1, len(facts["event_ids"]) + 1))
    assert 20 <= len(facts["event_ids"]) <= at_least + 1  # one post may be mid-answer
    assert facts["rows_per_event"] == {DESTINATIONS}
    assert facts["attempts_mismatched"] == 0
