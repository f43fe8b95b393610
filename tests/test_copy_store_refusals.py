"""`relay copy-store`'s refusals: each says why, in words, with the password left out."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from relay.cli import main
from relay.store.sqlite import open_sqlite_store
from tests.test_cli import write_toml


def copy(path: Path, to: str, environ: dict[str, str] | None = None) -> int:
    import os
    from unittest import mock

    with mock.patch.dict(os.environ, environ or {}):
        return main(["--config", str(path), "copy-store", "--to", to])


async def test_copy_store_says_why_it_cannot_copy(
    config_dict: dict[str, Any], tmp_path: Path, capsys: Any, postgres_dsn: str
) -> None:
    path = write_toml(config_dict, tmp_path / "relay.toml")
    assert await asyncio.to_thread(copy, path, "env:RELAY_NOT_SET") == 2
    assert "env:RELAY_NOT_SET is not set" in capsys.readouterr().err
    assert await asyncio.to_thread(copy, path, postgres_dsn) == 1  # no SQLite store yet
    assert "no store at" in capsys.readouterr().err

    async with open_sqlite_store(tmp_path / "relay.sqlite3"):
        pass
    secret = "postgresql://relay:s3cr3t-pw@127.0.0.1:1/relay"
    assert await asyncio.to_thread(copy, path, "env:RELAY_TARGET", {"RELAY_TARGET": secret}) == 1
    err = capsys.readouterr().err
    assert "nothing copied" in err and "s3cr3t-pw" not in err

    on_postgres = write_toml(
        {**config_dict, "storage": {"postgres_dsn": postgres_dsn}}, tmp_path / "pg.toml"
    )
    assert await asyncio.to_thread(copy, on_postgres, postgres_dsn) == 2
    assert "already PostgreSQL" in capsys.readouterr().err
