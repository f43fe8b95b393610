"""Print a pip constraints file pinning each runtime dependency to its lower bound.

`make test-floors` installs with it, so that every `>=` in pyproject.toml is a floor
the suite has passed on, not a guess. Standard library only: it runs before any venv.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

_FLOOR = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*[^;]*?>=\s*([^,;\s]+)")


def floors(pyproject: Path) -> list[str]:
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    pins = []
    for requirement in project["dependencies"]:
        match = _FLOOR.match(requirement)
        if match is None:
            raise SystemExit(f"{requirement!r} has no '>=' floor: give it one")
        pins.append(f"{match.group(1)}=={match.group(2)}")
    return pins


if __name__ == "__main__":
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent
    print("\n".join(floors(root / "pyproject.toml")))
