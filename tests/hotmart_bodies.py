"""Hypothesis strategies for bodies near Hotmart's shape: the fixtures, mangled.

Shared by the fuzzing of a running relay (tests/acceptance/test_bad_input.py) and the
tests that hold two readers or writers of one event to the same result (the strict and
lenient parsers, the Python and Jinja webhook bodies).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from hypothesis import strategies as st

from relay.hotmart import Event, parse_json_event, parse_v1_postback
from tests.conftest import FIXTURES as FIXTURES_DIR
from tests.conftest import fixture_json

huge_numbers = st.one_of(
    st.integers(min_value=-(10**40), max_value=10**40),
    st.floats(allow_nan=False, allow_infinity=False),
    # As text, within what today's code can render without harm (issue 6 defect 1 is
    # tested on its own); the JSON literal forms below reach orjson's own limits.
    st.integers(min_value=-5000, max_value=5000).map(lambda e: f"1E{e:+d}"),
    st.sampled_from(["NaN", "Infinity", "-0", "1e999", "0x10", "1_000", "٣", "²", "1,5"]),
)
json_leaves = st.one_of(
    st.none(),
    st.booleans(),
    huge_numbers,
    st.text(max_size=50),
    st.text(alphabet=st.characters(max_codepoint=0x1F), max_size=10),  # control characters
    st.text(max_size=5000).map(lambda s: s * 3),
)
json_values = st.recursive(
    json_leaves,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)
FIXTURES = [
    "billet_printed_oxxo.json",
    "billet_printed_boleto.json",
    "billet_printed_pix.json",
    "test_button_billet_printed.json",
    "purchase_approved_oxxo.json",
]


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            found += _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found += _paths(child, (*prefix, index))
    return found


@st.composite
def hotmart_like(draw: st.DrawFn) -> dict[str, Any]:
    """A fixture with some leaves or branches replaced, removed or renamed to camelCase."""
    event = fixture_json(draw(st.sampled_from(FIXTURES)))
    for _ in range(draw(st.integers(0, 6))):
        paths = _paths(event)[1:]
        path = draw(st.sampled_from(paths))
        parent: Any = event
        for step in path[:-1]:
            parent = parent[step]
        action = draw(st.sampled_from(["replace", "replace", "delete", "camel"]))
        if action == "delete" or (action == "camel" and not isinstance(path[-1], str)):
            del parent[path[-1]]
        elif action == "camel":
            head, *rest = path[-1].split("_")
            parent[head + "".join(w.capitalize() for w in rest)] = parent.pop(path[-1])
        else:
            parent[path[-1]] = draw(json_values)
    if draw(st.booleans()):
        event["id"] = draw(st.uuids()).hex  # mostly new events, so they go all the way
    return event


# Every fixture: the project's own, and the shared set as the brief's author wrote it
# (tests/fixtures/shared: a Brazilian phone with its DDD, a v1 date in dd/mm/yyyy).
FIXTURE_FILES = sorted(
    path
    for folder in (FIXTURES_DIR, FIXTURES_DIR / "shared")
    for path in folder.iterdir()
    if path.suffix in (".json", ".form")
)


def fixture_event(path: Path) -> Event:
    """The event a fixture file holds, read as ingest reads it."""
    if path.suffix == ".form":
        return parse_v1_postback(dict(parse_qsl(path.read_text(encoding="utf-8"))))
    return parse_json_event(json.loads(path.read_bytes()))
