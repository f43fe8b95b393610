"""Instructions per call of the relay's per-message work, old way against new, by callgrind.

Wall-clock timings on a shared 2-core machine swing by tens of percent from one run to
the next; an instruction count does not. Each measure runs in its own process under
`valgrind --tool=callgrind` with collection off, except inside one libc `qsort` call
whose comparator runs the work `--calls` times (after one warm-up call, so caches and
compiled templates are already in place). An empty comparator's count is taken off, so
what is left is the work alone.

    .venv/bin/python -m bench.instructions            # every pair, old and new
    .venv/bin/python -m bench.instructions --only mime --calls 5

Needs valgrind (`apt-get install valgrind`). Each measure takes a few seconds to a
minute: Python runs about fifty times slower under callgrind.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import orjson

from bench.common import FIXTURE, ROOT
from bench.reference import stdlib_message_bytes, token_hex_message_id
from relay.hotmart import parse_json_event
from relay.messages import EmailMessageSpec
from relay.render import Notification, Templates, default_templates_dir

Work = Callable[[], object]
FROM_ADDRESS = "Relay <relay@example.com>"
DEFAULT_CALLS = 20


def _notification(locale: str = "es") -> Notification:
    event = parse_json_event(orjson.loads(FIXTURE.read_bytes()))
    return Notification(event, "K12345678M", "Ana Afiliada", "Acme", locale, False, "msg_0123")


def _webhook_jinja() -> Work:
    # An override folder holding the default webhook.json: rendered by Jinja, as before.
    folder = Path(tempfile.mkdtemp(prefix="relay-bench-"))
    (folder / "webhook.json").write_bytes((default_templates_dir() / "webhook.json").read_bytes())
    templates, n = Templates(folder), _notification()
    return lambda: templates.webhook_body(n)


def _webhook_default() -> Work:
    templates, n = Templates(), _notification()
    return lambda: templates.webhook_body(n)


def _email_spec() -> EmailMessageSpec:
    rendered = Templates().email(_notification())
    return EmailMessageSpec("ana@example.com", rendered.subject, rendered.text, rendered.html, "m1")


def _mime_stdlib() -> Work:
    spec = _email_spec()
    return lambda: stdlib_message_bytes(spec, FROM_ADDRESS)


def _mime_direct() -> Work:
    from relay.mime_writer import message_bytes

    spec = _email_spec()
    return lambda: message_bytes(spec, FROM_ADDRESS)


def _parse() -> Work:
    body = FIXTURE.read_bytes()
    return lambda: parse_json_event(orjson.loads(body))


def _new_message_id() -> Work:
    from relay.outbox import new_message_id

    return new_message_id


# Each measure: (what it is, old way or None when the old way is gone, new way).
PAIRS: dict[str, tuple[str, Callable[[], Work] | None, Callable[[], Work]]] = {
    "webhook": ("default webhook.json body", _webhook_jinja, _webhook_default),
    "mime": ("multipart/alternative email bytes", _mime_stdlib, _mime_direct),
    "message_id": ("message id", lambda: token_hex_message_id, _new_message_id),
    # The parser was made cheaper in place: README, "Performance", has its count before.
    "parse": ("OXXO fixture bytes to Event", None, _parse),
}


def run_in_qsort(work: Work, calls: int) -> None:
    """Call `work` `calls` times inside one libc qsort, where callgrind collects."""
    pending = [calls]

    def compare(_a: int | None, _b: int | None) -> int:
        # qsort may compare more than once; the work runs on the first comparison only.
        for _ in range(pending[0]):
            work()
        pending[0] = 0
        return 0

    comparator = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)(compare)
    items = (ctypes.c_int * 2)(1, 2)
    ctypes.CDLL(None).qsort(items, 2, ctypes.sizeof(ctypes.c_int), comparator)


def _child(name: str, side: str, calls: int) -> None:
    if side == "empty":
        work: Work = lambda: None  # noqa: E731
    else:
        _, old, new = PAIRS[name]
        make = old if side == "old" else new
        assert make is not None
        work = make()
    work()  # warm-up: compiled templates, regexes and caches are in place before counting
    run_in_qsort(work, calls)


def _count(name: str, side: str, calls: int) -> int:
    """Instructions collected inside qsort for one measure, in a callgrind child."""
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "callgrind.out"
        command = [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={out}",
            "--collect-atstart=no",
            "--toggle-collect=*qsort*",  # glibc enters qsort through qsort_r
            sys.executable,
            "-m",
            "bench.instructions",
            "--child",
            name,
            side,
            str(calls),
        ]
        env = {**os.environ, "PYTHONHASHSEED": "0"}
        subprocess.run(command, check=True, cwd=ROOT, env=env, capture_output=True)
        for line in out.read_text().splitlines():
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1])
    raise RuntimeError(f"callgrind wrote no totals for {name} {side}")


def measure(names: list[str], calls: int) -> dict[str, dict[str, object]]:
    """`{name: {what, old, new, ratio}}`, instructions per call (old and ratio may be None)."""
    empty = _count("webhook", "empty", calls)
    results: dict[str, dict[str, object]] = {}
    for name in names:
        what, old_way, _ = PAIRS[name]
        new = round((_count(name, "new", calls) - empty) / calls)
        old = None if old_way is None else round((_count(name, "old", calls) - empty) / calls)
        ratio = None if old is None else new / old
        results[name] = {"what": what, "old": old, "new": new, "ratio": ratio}
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.instructions", description=__doc__)
    parser.add_argument("--only", nargs="+", choices=sorted(PAIRS), default=list(PAIRS))
    parser.add_argument("--calls", type=int, default=DEFAULT_CALLS)
    parser.add_argument(
        "--child", nargs=3, metavar=("NAME", "SIDE", "CALLS"), help=argparse.SUPPRESS
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    if args.child:
        _child(args.child[0], args.child[1], int(args.child[2]))
        return
    results = measure(args.only, args.calls)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"{'measure':<40} {'old':>12} {'new':>12} {'new/old':>8}")
    for result in results.values():
        old, new, ratio = result["old"], result["new"], result["ratio"]
        old_text = "-" if old is None else f"{old:,}"
        ratio_text = "-" if ratio is None else f"{ratio:.3f}"
        print(f"{result['what']:<40} {old_text:>12} {new:>12,} {ratio_text:>8}")


if __name__ == "__main__":
    main()
