"""The `relay` command (SPEC §3). The only place that reads the environment or runs asyncio."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sqlite3
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from relay.checks import config_warnings, recovery_notes, template_problems
from relay.config import Config, ConfigError, load_config
from relay.durations import parse_since_ms
from relay.logs import LOG_FORMATS, LOG_LEVELS, install
from relay.records import DeliveryStatus, Notice

log = logging.getLogger("relay.cli")
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_CONFIG = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="relay", description="Forward Hotmart payment slips to permitted affiliates."
    )
    # `relay serve --config X` reads as naturally as `relay --config X serve`: take both.
    # SUPPRESS keeps a subcommand's unset flag from hiding the top-level one.
    _global_flags(parser, suppress=None)
    after_command = argparse.ArgumentParser(add_help=False)
    _global_flags(after_command, suppress=argparse.SUPPRESS)

    parser.add_argument("--version", action="version", version=f"relay {relay_version()}")

    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=help_text, parents=[after_command])

    serve_command = command("serve", "run HTTP ingest and the dispatcher")
    serve_command.add_argument(
        "--migrate",
        action="store_true",
        help="PostgreSQL: apply the store's missing migrations first",
    )
    command("migrate", "apply the store's missing migrations (PostgreSQL; SQLite does it itself)")
    copy = command("copy-store", "copy the SQLite store into an empty PostgreSQL store")
    copy.add_argument(
        "--to", required=True, metavar="DSN", help="postgresql://... or env:NAME (keeps it secret)"
    )
    command("check-config", "validate the config and compile every template")

    history = command("history", "list deliveries, newest first")
    history.add_argument("--status", choices=[s.value for s in DeliveryStatus])
    history.add_argument("--affiliate", help="affiliate code")
    history.add_argument("--event", help="Hotmart event name, e.g. PURCHASE_BILLET_PRINTED")
    history.add_argument("--channel", choices=["email", "webhook"])
    history.add_argument("--transaction", help="Hotmart transaction, e.g. HP1764271200123")
    history.add_argument("--hotmart-id", help="Hotmart's event id")
    history.add_argument(
        "--notification", choices=[n.value for n in Notice], help="what the delivery says"
    )
    history.add_argument("--since", type=since, help="'2h' ago or an ISO date")
    history.add_argument("--before", type=positive_int, help="only ids below this (next page)")
    history.add_argument("--limit", type=positive_int, default=50)
    history.add_argument("--json", action="store_true", help="machine-readable output")

    show = command("show", "one delivery with every attempt")
    show.add_argument("id", type=positive_int)
    show.add_argument("--json", action="store_true")

    replay = command("replay", "send deliveries again, now")
    replay.add_argument("ids", type=positive_int, nargs="*", metavar="ID")
    replay.add_argument("--failed", action="store_true", help="every failed delivery")
    replay.add_argument(
        "--withheld",
        action="store_true",
        help="decide every withheld delivery again against the config in force",
    )
    replay.add_argument(
        "--since",
        type=since,
        help="with --failed or --withheld: created since '2h' ago or an ISO date",
    )
    replay.add_argument("--affiliate", metavar="CODE", help="with --withheld: only this affiliate")

    send_test = command("send-test", "send a marked test notification")
    send_test.add_argument("--affiliate", required=True, metavar="CODE")
    send_test.add_argument("--producer", help="producer id, when several name this affiliate")
    send_test.add_argument("--destination", metavar="ID", help="only the destination with this id")

    destinations = command("destinations", "list health; enable or disable")
    toggle = destinations.add_mutually_exclusive_group()
    toggle.add_argument("--enable", metavar="KEY", help="e.g. acme/Q58388177J/mail")
    toggle.add_argument("--disable", metavar="KEY")
    destinations.add_argument("--json", action="store_true")

    recovery = command("recovery", "sale recovery: slips notified, paid, expired, time to pay")
    recovery.add_argument("--since", type=since, help="slips since '7d' ago or an ISO date")
    recovery.add_argument("--producer", metavar="ID", help="only this producer")
    recovery.add_argument("--affiliate", metavar="CODE", help="only this affiliate")
    recovery.add_argument("--json", action="store_true", help="machine-readable output")

    command("purge", "scrub buyer data older than storage.retention, keep delivery facts")
    backup = command("backup", "copy the store, consistently, while it is in use")
    backup.add_argument("path", metavar="PATH", help="the file to write (0600)")
    backup.add_argument("--force", action="store_true", help="replace PATH if it exists")
    return parser


def _global_flags(parser: argparse.ArgumentParser, suppress: str | None) -> None:
    def default(value: str | None) -> str | None:
        return suppress if suppress is not None else value

    parser.add_argument(
        "--config",
        type=Path,
        default=default(None),
        help="config file (default: $RELAY_CONFIG, else ./relay.toml)",
    )
    parser.add_argument(
        "--log-format", choices=LOG_FORMATS, default=default("text"), help="text or json lines"
    )
    parser.add_argument("--log-level", type=str.lower, choices=LOG_LEVELS, default=default("info"))


def relay_version() -> str:
    try:
        return version("relay")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def since(text: str) -> str:
    """Check a --since value while parsing, so a typo is a usage error, not a traceback.

    The text is kept: each command turns it into a time against its own clock.
    """
    try:
        parse_since_ms(text, 0)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be a whole number of 1 or more")
    return value


def config_path(arg: Path | None, environ: dict[str, str]) -> Path:
    if arg is not None:
        return arg
    return Path(environ.get("RELAY_CONFIG", "relay.toml"))


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # a usage error (2), --help or --version (0): already printed
        return exc.code if isinstance(exc.code, int) else EXIT_OK
    install(args.log_format, args.log_level)
    environ = dict(os.environ)
    path = config_path(args.config, environ)
    try:
        config = load_config(path, environ)
    except ConfigError as exc:
        print(f"{path}: invalid config", file=sys.stderr)
        for where, reason in exc.problems:
            print(f"  {where}: {reason}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    args.environ = environ  # for a command's own `env:NAME` arguments (copy-store --to)
    return run_command(args, config)


def run_command(args: argparse.Namespace, config: Config) -> int:
    from relay.commands import copy_store, history, maintain, operate, recovery, store_admin

    if args.command == "check-config":
        return check_config(config)
    if args.command == "serve":
        # A broken template would fail every delivery it serves: refuse to start instead.
        if check_config(config, quiet=True) != EXIT_OK:
            return EXIT_BAD_CONFIG
        ready = asyncio.run(store_admin.ready_to_serve(config, migrate=args.migrate))
        if ready != EXIT_OK:
            return ready
        return serve(config, args)
    handlers = {
        "history": history.history,
        "show": history.show,
        "replay": operate.replay,
        "send-test": operate.send_test,
        "destinations": operate.destinations,
        "recovery": recovery.recovery,
        "purge": maintain.purge,
        "backup": maintain.backup,
        "migrate": store_admin.migrate,
        "copy-store": copy_store.copy_store,
    }
    return asyncio.run(handlers[args.command](config, args))


def check_config(config: Config, *, quiet: bool = False) -> int:
    """Exit 2 on an error; warnings are printed (or, when quiet, logged) and pass."""
    problems = template_problems(config)
    if problems:
        for problem in problems:
            print(problem, file=sys.stderr)
        return EXIT_BAD_CONFIG
    warnings = config_warnings(config)
    for where, reason in warnings:
        if quiet:
            log.warning("config: %s: %s", where, reason)
        else:
            print(f"warning: {where}: {reason}", file=sys.stderr)
    for note in recovery_notes(config):
        if quiet:
            log.info("config: %s", note)
        else:
            print(f"note: {note}")
    if quiet:
        return EXIT_OK
    affiliates = sum(len(p.affiliates) for p in config.producers)
    counted = f", {len(warnings)} warning{'s' if len(warnings) != 1 else ''}" if warnings else ""
    print(f"config ok: {len(config.producers)} producer(s), {affiliates} affiliate(s){counted}")
    return EXIT_OK


def serve(config: Config, args: argparse.Namespace) -> int:
    from relay.service import serve as run_server
    from relay.store import StoreUnavailable
    from relay.worker_children import Logging

    try:
        run_server(config, Logging(args.log_format, args.log_level))
    except (RuntimeError, OSError, StoreUnavailable, sqlite3.Error) as exc:
        # Another instance holds the database, the port is taken, the disk refuses:
        # say which, plainly, for the operator at 3 a.m.
        print(f"relay: cannot serve: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK
