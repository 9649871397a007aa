"""Which addresses a webhook may be sent to (the server-side request forgery guard).

A tenant chooses ``webhook_url`` and docbatch connects to it from inside the deployment,
where the database, the broker, the cloud metadata service (169.254.169.254) and every
private network are in reach. So a webhook host must resolve only to public (global
unicast) addresses, unless DOCBATCH_WEBHOOK_ALLOW_NETWORKS names the network (for a
receiver on the same host or LAN). The check runs on the resolved addresses, not the
spelling: ``127.1``, ``0x7f000001``, ``2130706433``, ``[::1]`` and ``[::ffff:127.0.0.1]``
are all 127.0.0.1 to the resolver. It runs when a job is submitted and again at every
delivery, and the delivery connects to the address that was checked (a DNS answer that
changes in between cannot redirect it). Example::

    target = resolve_webhook("https://hooks.example.com/x", allow=[])
    target.address   # the checked IP to connect to
    redact(url)      # "https://hooks.example.com": what may be logged
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
ALLOW_SETTING = "DOCBATCH_WEBHOOK_ALLOW_NETWORKS"
NAT64 = ipaddress.ip_network("64:ff9b::/96")


class UnsafeDestination(ValueError):
    """The webhook URL leads somewhere docbatch must not connect to; the message says why."""


@dataclass(frozen=True)
class Target:
    """A webhook destination after the check: connect to ``address``, send ``host`` as the
    Host header and TLS server name."""

    scheme: str
    host: str
    port: int
    address: IPAddress


def redact(url: str) -> str:
    """Scheme and host (and port) only: paths and query strings often carry secrets."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<unparsable url>"
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}{port}"


def parse_networks(values: Sequence[str]) -> list[Network]:
    """The allowlist setting as networks (``127.0.0.1``, ``10.0.0.0/8``, ``::1``)."""
    return [ipaddress.ip_network(v.strip(), strict=False) for v in values if v.strip()]


def _embedded(address: IPAddress) -> IPAddress | None:
    """The IPv4 address an IPv6 address carries (mapped, 6to4, Teredo, NAT64), if any."""
    if isinstance(address, ipaddress.IPv4Address):
        return None
    if address.ipv4_mapped:
        return address.ipv4_mapped
    if address.sixtofour:
        return address.sixtofour
    if address.teredo:
        return address.teredo[1]
    if address in NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def refusal(address: IPAddress) -> str | None:
    """Why ``address`` is not a public destination, or None if it is."""
    inner = _embedded(address)
    if inner is not None:
        reason = refusal(inner)
        return f"{reason} (inside {address})" if reason else None
    for kind, flag in (
        ("a loopback", address.is_loopback),
        ("an unspecified", address.is_unspecified),
        ("a link-local", address.is_link_local),
        ("a multicast", address.is_multicast),
        ("a private", address.is_private),
        ("a reserved", address.is_reserved),
    ):
        if flag:
            return f"{address} is {kind} address"
    if not address.is_global:
        return f"{address} is not a public address"
    return None


def check_address(address: IPAddress, allow: Sequence[Network]) -> str | None:
    """None when docbatch may connect to ``address``; else the reason it may not."""
    if any(address.version == net.version and address in net for net in allow):
        return None
    return refusal(address)


def resolve_webhook(url: str, allow: Sequence[str]) -> Target:
    """Resolve ``url``'s host and check every address it resolves to; the first is the one
    to connect to. Raises UnsafeDestination naming the host and the reason."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError as exc:
        raise UnsafeDestination(f"is not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not host:
        raise UnsafeDestination("must be an http:// or https:// URL")
    port = port or (443 if parts.scheme == "https" else 80)
    networks = parse_networks(allow)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise UnsafeDestination(f"host {host} does not resolve ({exc})") from None
    addresses: list[IPAddress] = []
    for info in infos:
        # Scope ids (fe80::1%eth0) are not part of the address.
        address = ipaddress.ip_address(str(info[4][0]).split("%")[0])
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise UnsafeDestination(f"host {host} does not resolve")
    for address in addresses:
        reason = check_address(address, networks)
        if reason:
            raise UnsafeDestination(
                f"host {host} is refused: {reason}; webhooks go only to public addresses "
                f"unless {ALLOW_SETTING} names the network"
            )
    return Target(parts.scheme, host, port, addresses[0])
