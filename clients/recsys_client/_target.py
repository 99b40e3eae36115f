"""Where a client connects: one ``host:port``, several replicas, or a ``dns:///`` name, turned
into one gRPC channel target balanced by gRPC's own round-robin.

gRPC's name syntax (doc/naming.md in grpc/grpc) has no scheme for a list of host names, only
``ipv4:a:p,b:q`` and ``ipv6:[a]:p,[b]:q`` for literal addresses. A list of replicas is therefore
resolved here, once, to addresses; a ``dns:///name:port`` target (or a single ``host:port``) is
left to gRPC's resolver, which resolves it again when a connection fails.
"""

from __future__ import annotations

import ipaddress
import json
import re
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

#: Balance calls across every address of the target (gRPC's default, pick_first, uses one).
SERVICE_CONFIG = json.dumps({"loadBalancingConfig": [{"round_robin": {}}]})

# Schemes passed to gRPC as they are (a plain "host:port" parses as scheme "host" otherwise).
_URI_SCHEMES = ("dns:", "ipv4:", "ipv6:", "unix:", "unix-abstract:")
_HOST_NAME = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?")
_DNS = re.compile(r"dns:(//[^/]*/)?(?P<endpoint>.*)")

Resolver = Callable[[str, int], list[tuple[Any, ...]]]


@dataclass(frozen=True)
class Target:
    """A parsed client target."""

    display: str
    """The target as the user gave it, entries joined by commas (for messages and repr)."""
    uri: str
    """The gRPC channel target."""
    authority: str | None = None
    """The ``:authority`` (and TLS name) to send when ``uri`` lists resolved addresses: the
    first entry as given, so a certificate for the host name still verifies."""


def _split_host_port(entry: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` → (host, port); ValueError naming ``entry``."""
    if entry.startswith("["):
        host, sep, rest = entry[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ValueError(f"target {entry!r}: write an IPv6 address as '[addr]:port'")
        port_text = rest[1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"target {entry!r}: {host!r} is not an IPv6 address") from None
    else:
        host, sep, port_text = entry.rpartition(":")
        if not sep or not host:
            raise ValueError(f"target {entry!r} must be 'host:port'")
        if not _HOST_NAME.fullmatch(host):
            raise ValueError(f"target {entry!r}: {host!r} is not a host name or address")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"target {entry!r}: port must be 1..65535, got {port_text!r}")
    return host, int(port_text)


def _addresses(host: str, port: int, entry: str, resolve: Resolver) -> list[str]:
    """The IP addresses of ``host`` (itself when it is one)."""
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        pass
    try:
        infos = resolve(host, port)
    except OSError as e:
        reason = getattr(e, "strerror", None) or e
        raise ValueError(f"target {entry!r}: cannot resolve {host!r}: {reason}") from None
    found = list(dict.fromkeys(str(info[4][0]).split("%")[0] for info in infos))
    if not found:
        raise ValueError(f"target {entry!r}: {host!r} has no address")
    return found


def _getaddrinfo(host: str, port: int) -> list[tuple[Any, ...]]:
    return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)


def _uri(endpoints: list[tuple[str, int]]) -> str:
    """gRPC's ``ipv4:``/``ipv6:`` list; IPv4 addresses among IPv6 ones become v4-mapped."""
    ips = [(ipaddress.ip_address(ip), port) for ip, port in endpoints]
    if all(ip.version == 4 for ip, _ in ips):
        return "ipv4:" + ",".join(f"{ip}:{port}" for ip, port in ips)
    v6 = [
        (ipaddress.IPv6Address(f"::ffff:{ip}") if ip.version == 4 else ip, port) for ip, port in ips
    ]
    return "ipv6:" + ",".join(f"[{ip}]:{port}" for ip, port in v6)


def _entries(target: Any) -> list[str]:
    if isinstance(target, str) and target.strip().startswith(_URI_SCHEMES):
        parts = [target]  # one URI (gRPC's ipv4:/ipv6: lists have commas of their own)
    elif isinstance(target, str):
        parts = target.split(",")
    elif isinstance(target, Sequence) and all(isinstance(t, str) for t in target):
        parts = [p for t in target for p in t.split(",")]
    else:
        raise ValueError(f"target must be 'host:port' or a list of them, got {target!r}")
    entries = [p.strip() for p in parts]
    if not entries or entries == [""]:
        raise ValueError(f"target must be 'host:port', got {target!r}")
    for n, entry in enumerate(entries):
        if not entry:
            raise ValueError(f"target {target!r}: entry {n + 1} is empty")
    return entries


def parse(target: str | Sequence[str], resolve: Resolver = _getaddrinfo) -> Target:
    """Validates ``target`` and says how to connect to it.

    Args:
        target: ``"host:port"``; several replicas as a list or a comma-separated string
            (``"h1:p1,h2:p2"``); or a gRPC target URI such as ``"dns:///name:port"``.
        resolve: looks a host name up (``socket.getaddrinfo``-like); for tests.

    Raises:
        ValueError: naming the entry that is not a valid target, repeats, or does not resolve.
    """
    entries = _entries(target)
    display = ",".join(entries)
    if len(entries) == 1:
        (entry,) = entries
        m = _DNS.fullmatch(entry)
        if m:
            _split_host_port(m.group("endpoint"))
            return Target(display, entry)
        if entry.startswith(_URI_SCHEMES):
            return Target(display, entry)
        _split_host_port(entry)
        return Target(display, entry)  # gRPC resolves a single name itself (and again later)
    if len(set(entries)) != len(entries):
        repeated = next(e for e in entries if entries.count(e) > 1)
        raise ValueError(f"target {repeated!r} is given twice")
    endpoints: list[tuple[str, int]] = []
    for entry in entries:
        if entry.startswith(_URI_SCHEMES):
            raise ValueError(
                f"target {entry!r}: a list of targets takes 'host:port' entries; "
                "a gRPC URI such as dns:///name:port stands alone"
            )
        host, port = _split_host_port(entry)
        endpoints += [(ip, port) for ip in _addresses(host, port, entry, resolve)]
    endpoints = list(dict.fromkeys(endpoints))
    return Target(display, _uri(endpoints), authority=entries[0])


def channel_options(target: Target, options: Sequence[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """The channel options for ``target``: round-robin and, for a resolved list, the authority;
    options the caller gave win (gRPC would otherwise see the key twice)."""
    given = {key for key, _ in options}
    extra: list[tuple[str, Any]] = []
    if "grpc.service_config" not in given:
        extra.append(("grpc.service_config", SERVICE_CONFIG))
    if (
        target.authority is not None
        and "grpc.default_authority" not in given
        and "grpc.ssl_target_name_override" not in given
    ):
        extra.append(("grpc.default_authority", target.authority))
    return [*options, *extra]
