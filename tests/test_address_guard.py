"""The SSRF guard judges IPv6 forms that embed an IPv4 address by the address they reach."""

from __future__ import annotations

import socket

import pytest

from relay.addresses import is_forbidden_address, parse_ip_literal
from relay.channels.address_guard import (
    AddressRefusedError,
    GuardedResolver,
)
from tests.peers import FixedResolver


def _forbidden(literal: str) -> bool:
    address = parse_ip_literal(literal)
    assert address is not None
    return is_forbidden_address(address)


@pytest.mark.parametrize(
    "address",
    [
        # 6to4 (2002::/16): the next 32 bits are the IPv4 host a relay router reaches.
        "2002:7f00:0001::",  # 127.0.0.1
        "2002:7f00:1::1",
        "2002:a00:1::",  # 10.0.0.1
        "2002:c0a8:101::1",  # 192.168.1.1
        "2002:a9fe:a9fe::",  # 169.254.169.254, the cloud metadata endpoint
        "2002:6440:1::",  # 100.64.0.1, shared address space
        "2002::",  # 0.0.0.0
        # NAT64, RFC 6052's well-known prefix (64:ff9b::/96): the last 32 bits.
        "64:ff9b::7f00:1",
        "64:ff9b::127.0.0.1",
        "64:ff9b::a9fe:a9fe",
        "64:ff9b::a00:1",
        # NAT64, RFC 8215's local-use prefix: where the IPv4 sits depends on the
        # operator's prefix length, which nothing here can know.
        "64:ff9b:1::7f00:1",
        "64:ff9b:1:7f00:1::",
        "64:ff9b:1::5db8:d822",
        # Teredo (2001::/32) tunnels to the (obfuscated) client address over UDP.
        "2001:0:4136:e378:8000:63bf:80ff:fffe",  # client 127.0.0.1
        "2001:0:5db8:d822:0:0:a2b7:29cb",  # client 93.184.216.34, still a tunnel
        # IPv4-compatible (deprecated ::/96) and IPv4-translated (::ffff:0:0:0/96) forms.
        "::7f00:1",
        "::ffff:0:7f00:1",
    ],
)
def test_ipv6_forms_that_reach_a_private_ipv4_host_are_forbidden(address: str) -> None:
    assert _forbidden(address)


@pytest.mark.parametrize(
    "address",
    [
        "2002:5db8:d822::1",  # 6to4 of 93.184.216.34
        "64:ff9b::5db8:d822",  # NAT64 of 93.184.216.34: how an IPv6-only host reaches it
        "64:ff9b::8.8.8.8",
    ],
)
def test_ipv6_forms_that_reach_a_public_ipv4_host_are_allowed(address: str) -> None:
    assert not _forbidden(address)


async def test_a_name_resolving_to_6to4_or_nat64_of_loopback_is_refused() -> None:
    resolver = GuardedResolver(FixedResolver("2002:7f00:1::", "64:ff9b::7f00:1"))

    with pytest.raises(AddressRefusedError) as caught:
        await resolver.resolve("rebind.example", 443, socket.AF_INET6)

    assert caught.value.host == "rebind.example"


async def test_a_name_resolving_to_nat64_of_a_public_host_is_kept() -> None:
    resolver = GuardedResolver(FixedResolver("2002:a00:1::", "64:ff9b::5db8:d822"))

    results = await resolver.resolve("dns64.example", 443, socket.AF_INET6)

    assert [r["host"] for r in results] == ["64:ff9b::5db8:d822"]
