"""Which addresses a URL input may reach: globally routable unicast only.

IPv6 forms that carry an IPv4 address (IPv4-mapped, IPv4-compatible, IPv4-translated, NAT64 well-known prefix,
6to4, Teredo) reach that IPv4 address through a gateway, so they are judged by the address they embed: Python
calls many of them global (`64:ff9b::10.0.0.1`, `2002:0a00:0001::`, `::127.0.0.1`). Used by `inputs.fetch_url`
(the service and the RunPod worker). Pure functions: nothing here touches the network.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address

SHARED_V4 = IPv4Network("100.64.0.0/10")  # carrier-grade NAT (RFC 6598)
NAT64_WKP = IPv6Network("64:ff9b::/96")  # RFC 6052: the IPv4 address is the last 32 bits
NAT64_LOCAL = IPv6Network("64:ff9b:1::/48")  # RFC 8215: operator-chosen layout inside, so refused as a whole
COMPATIBLE = IPv6Network("::/96")  # deprecated IPv4-compatible ::a.b.c.d
TRANSLATED = IPv6Network("::ffff:0:0:0/96")  # RFC 2765 IPv4-translated ::ffff:0:a.b.c.d


def embedded_ipv4(ip: IPv6Address) -> list[IPv4Address]:
    """The IPv4 addresses an IPv6 address leads to (empty for a plain IPv6 address)."""
    if ip.ipv4_mapped:
        return [ip.ipv4_mapped]
    if ip.teredo:  # (server, client): the packet goes via the server to the client's mapped address
        return list(ip.teredo)
    if ip.sixtofour:
        return [ip.sixtofour]
    low32 = IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip in NAT64_WKP or ip in TRANSLATED:
        return [low32]
    if ip in COMPATIBLE and int(ip) > 1:  # :: and ::1 are themselves (unspecified, loopback)
        return [low32]
    return []


def _ipv4_problem(ip: IPv4Address) -> str | None:
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_multicast or ip == IPv4Address("255.255.255.255"):
        return "multicast or broadcast"
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if ip in SHARED_V4:
        return "shared (carrier-grade NAT)"
    if ip.is_reserved:
        return "reserved"
    if ip.is_private or not ip.is_global:
        return "private"
    return None


def _ipv6_problem(ip: IPv6Address) -> str | None:
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_multicast:
        return "multicast"
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if ip.is_site_local or ip in NAT64_LOCAL:
        return "site-local"
    if ip.is_private or not ip.is_global:
        return "private"
    if ip.is_reserved:
        return "reserved"
    return None


def problem(ip: IPv4Address | IPv6Address | str) -> str | None:
    """Why `ip` may not be fetched (e.g. "private (embedded in 2002:a00:1::)"), or None when it may."""
    ip = ip_address(ip.split("%", 1)[0]) if isinstance(ip, str) else ip
    if isinstance(ip, IPv4Address):
        return _ipv4_problem(ip)
    inner = embedded_ipv4(ip)
    if not inner:
        return _ipv6_problem(ip)
    for v4 in inner:
        why = _ipv4_problem(v4)
        if why:
            return f"{why} ({v4} embedded in {ip})"
    return None


def always_refused(why: str) -> bool:
    """Targets refused even when the operator allows private addresses (they are not one host)."""
    return why.startswith(("unspecified", "multicast"))
