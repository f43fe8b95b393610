"""The SSRF guard: which addresses a webhook may reach, checked when it connects.

A URL's host is only a name until it resolves, and a name can resolve to a private
address at any time (DNS rebinding), so the check runs inside the connector's
resolver, on the addresses the socket will actually use. aiohttp skips the
resolver for IP literals, so `WebhookChannel` checks those itself with
`relay.addresses.is_forbidden_address` before it sends.
"""

from __future__ import annotations

import socket

from aiohttp.abc import AbstractResolver, ResolveResult

from relay.addresses import is_forbidden_address, parse_ip_literal


class AddressRefusedError(Exception):
    """A destination resolved only to addresses the guard forbids.

    Not an OSError on purpose: aiohttp would wrap an OSError from the resolver
    into a DNS error, and a refusal must stay distinguishable from a lookup failure.
    """

    def __init__(self, host: str) -> None:
        super().__init__(refusal_reason(host))
        self.host = host


def refusal_reason(host: str) -> str:
    return (
        f"refused: {host} resolves to a private address "
        "(set delivery.allow_private_networks = true to allow)"
    )


class GuardedResolver(AbstractResolver):
    """Wraps a resolver and drops forbidden addresses; raises if none is left."""

    def __init__(self, inner: AbstractResolver) -> None:
        self._inner = inner

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        allowed = [r for r in results if not _result_is_forbidden(r)]
        if not allowed:
            raise AddressRefusedError(host)
        return allowed

    async def close(self) -> None:
        await self._inner.close()


def _result_is_forbidden(result: ResolveResult) -> bool:
    address = parse_ip_literal(result["host"])
    # A resolver answer that is not an address cannot be judged, so it is not used.
    return address is None or is_forbidden_address(address)
