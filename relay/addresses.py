"""Which IP addresses are public unicast, judged by the host they really reach.

Pure and stdlib-only, so that both the config check (a webhook URL written as an IP
literal) and the SSRF guard at connect time (`relay.channels.address_guard`) use the
one rule.
"""

from __future__ import annotations

import ipaddress

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Cloud instance metadata endpoints: the classic SSRF prize. Both already fall in
# link-local / unique-local ranges; named here so a reader sees they are covered.
CLOUD_METADATA_ADDRESSES: frozenset[IPAddress] = frozenset(
    {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}
)


# NAT64 well-known prefix (RFC 6052): a translator turns 64:ff9b::a.b.c.d into a.b.c.d.
NAT64_WELL_KNOWN = ipaddress.IPv6Network("64:ff9b::/96")
# Tunnels whose IPv4 end cannot be judged from the address alone, so they are refused whole:
# - NAT64 local-use (RFC 8215): where the IPv4 address sits depends on the operator's
#   prefix length (/48 to /96), which the relay cannot know;
# - Teredo (RFC 4380): a UDP tunnel to a client behind a NAT; no webhook receiver needs it.
UNKNOWABLE_IPV4_TUNNELS = (
    ipaddress.IPv6Network("64:ff9b:1::/48"),
    ipaddress.IPv6Network("2001::/32"),
)


def parse_ip_literal(host: str) -> IPAddress | None:
    """The address if `host` is an IP literal (brackets and zone allowed), else None."""
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def is_forbidden_address(address: IPAddress) -> bool:
    """True for anything that is not a public unicast address, judged by the host it reaches."""
    if isinstance(address, ipaddress.IPv6Address):
        if any(address in tunnel for tunnel in UNKNOWABLE_IPV4_TUNNELS):
            return True
        embedded = embedded_ipv4(address)
        if embedded is not None:
            # The IPv6 form is only a way to reach this IPv4 host: judge the host.
            address = embedded
    return (
        address in CLOUD_METADATA_ADDRESSES
        or address.is_loopback
        or address.is_private
        or address.is_link_local
        or address.is_multicast  # not covered by is_global for IPv4
        or address.is_reserved
        or address.is_unspecified
        or not address.is_global  # shared address space (100.64/10) and the like
    )


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 host an IPv6 address reaches, for the forms that carry one in their bits.

    IPv4-mapped (::ffff:a.b.c.d) reaches it on this host's own stack; 6to4
    (2002:aabb:ccdd::/48) through a 6to4 relay; NAT64 (64:ff9b::a.b.c.d) through a
    translator. The deprecated IPv4-compatible form (::a.b.c.d) is left to the
    reserved range (::/8) that holds it.
    """
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in NAT64_WELL_KNOWN:
        return ipaddress.IPv4Address(int(address) & 0xFFFF_FFFF)
    return None
