"""The typed key through which HTTP handlers reach the running relay (never a string)."""

from __future__ import annotations

from aiohttp import web

from relay.engine import Relay

RELAY = web.AppKey("relay", Relay)
