"""The `relay` command (SPEC §3). The only place that reads the environment or runs asyncio."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sqlite3
import sys
from collections.abc import Sequence
from pathlib import Path

from relay.config import Config, ConfigError, load_config
from relay.store.records import DeliveryStatus

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_CONFIG = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="relay", description="Forward Hotmart payment slips to permitted affiliates."
    )
    config_help = "config file (default: $RELAY_CONFIG, else ./relay.toml)"
    parser.add_argument("--config", type=Path, help=config_help)
    # `relay serve --config X` reads as naturally as `relay --config X serve`: take both.
    # SUPPRESS keeps a subcommand's unset --config from hiding the top-level one.
    config_after = argparse.ArgumentParser(add_help=False)
    config_after.add_argument("--config", type=Path, default=argparse.SUPPRESS, help=config_help)

    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=help_text, parents=[config_after])

    command("serve", "run HTTP ingest and the dispatcher")
    command("check-config", "validate the config and compile every template")

    history = command("history", "list deliveries, newest first")
    history.add_argument("--status", choices=[s.value for s in DeliveryStatus])
    history.add_argument("--affiliate", help="affiliate code")
    history.add_argument("--event", help="Hotmart event name, e.g. PURCHASE_BILLET_PRINTED")
    history.add_argument("--channel", choices=["email", "webhook"])
    history.add_argument("--since", help="'2h' ago or an ISO date")
    history.add_argument("--before", type=int, help="only ids below this (next page)")
    history.add_argument("--limit", type=int, default=50)
    history.add_argument("--json", action="store_true", help="machine-readable output")

    show = command("show", "one delivery with every attempt")
    show.add_argument("id", type=int)
    show.add_argument("--json", action="store_true")

    replay = command("replay", "send deliveries again, now")
    replay.add_argument("ids", type=int, nargs="*", metavar="ID")
    replay.add_argument("--failed", action="store_true", help="every failed delivery")
    replay.add_argument(
        "--withheld",
        action="store_true",
        help="decide every withheld delivery again against the config in force",
    )
    replay.add_argument(
        "--since", help="with --failed or --withheld: created since '2h' ago or an ISO date"
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
    return parser


def config_path(arg: Path | None, environ: dict[str, str]) -> Path:
    if arg is not None:
        return arg
    return Path(environ.get("RELAY_CONFIG", "relay.toml"))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    environ = dict(os.environ)
    path = config_path(args.config, environ)
    try:
        config = load_config(path, environ)
    except ConfigError as exc:
        print(f"{path}: invalid config", file=sys.stderr)
        for where, reason in exc.problems:
            print(f"  {where}: {reason}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    return run_command(args, config)


def run_command(args: argparse.Namespace, config: Config) -> int:
    from relay.commands import history, operate

    if args.command == "check-config":
        return check_config(config)
    if args.command == "serve":
        # A broken template would fail every delivery it serves: refuse to start instead.
        if check_config(config, quiet=True) != EXIT_OK:
            return EXIT_BAD_CONFIG
        return serve(config)
    handlers = {
        "history": history.history,
        "show": history.show,
        "replay": operate.replay,
        "send-test": operate.send_test,
        "destinations": operate.destinations,
    }
    return asyncio.run(handlers[args.command](config, args))


def check_config(config: Config, *, quiet: bool = False) -> int:
    from relay.targets import TemplateSet

    problems = TemplateSet(config).check()
    if problems:
        for problem in problems:
            print(problem, file=sys.stderr)
        return EXIT_BAD_CONFIG
    if quiet:
        return EXIT_OK
    affiliates = sum(len(p.affiliates) for p in config.producers)
    print(f"config ok: {len(config.producers)} producer(s), {affiliates} affiliate(s)")
    return EXIT_OK


def serve(config: Config) -> int:
    from relay.service import serve as run_server
    from relay.store import StoreUnavailable

    try:
        run_server(config)
    except (RuntimeError, OSError, StoreUnavailable, sqlite3.Error) as exc:
        # Another instance holds the database, the port is taken, the disk refuses:
        # say which, plainly, for the operator at 3 a.m.
        print(f"relay: cannot serve: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK
