"""Load SQL kept in .sql files: named queries and numbered migrations."""

from __future__ import annotations

import re
from pathlib import Path

_NAME = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)
_MIGRATION = re.compile(r"^(\d{4})_\w+\.sql$")


def load_queries(path: Path) -> dict[str, str]:
    """Split a file into statements, each introduced by a `-- name: NAME` line."""
    text = path.read_text(encoding="utf-8")
    parts = _NAME.split(text)
    # parts = [preamble, name1, sql1, name2, sql2, ...]
    queries = {
        name: sql.strip().rstrip(";") for name, sql in zip(parts[1::2], parts[2::2], strict=True)
    }
    if len(queries) != len(parts[1::2]):
        raise ValueError(f"{path}: a query name is used twice")
    return queries


def load_migrations(directory: Path) -> list[tuple[int, str]]:
    """Every `NNNN_name.sql` in `directory`, in version order."""
    found = []
    for path in directory.iterdir():
        match = _MIGRATION.match(path.name)
        if match:
            found.append((int(match.group(1)), path.read_text(encoding="utf-8")))
    return sorted(found)
