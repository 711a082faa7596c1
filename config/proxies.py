"""The client's address, believing `X-Forwarded-For` only from proxies we run (TRUSTED_PROXIES).

Anyone can send `X-Forwarded-For`, so the header says nothing unless the
connection came from a proxy of ours, which appends the address it saw. The
client is found by walking the header from the right, past every address that
is itself a trusted proxy: the first one that is not is the client (MDN,
"X-Forwarded-For: selecting an IP address"). With no trusted proxies, or a peer
that is not one, the header is ignored and the peer is the client.

One rule for every place that limits by address: HTTP (login throttling) and
WebSocket handshakes (anonymous connection limits).
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@functools.lru_cache(maxsize=8)
def _networks(items: tuple[str, ...]) -> tuple[Network, ...]:
    return parse_networks(items)


def parse_networks(items: Iterable[str]) -> tuple[Network, ...]:
    """`127.0.0.1`, `10.0.0.0/8`, `::1` ... as networks; a bad item is refused with its text."""
    networks = []
    for item in items:
        try:
            networks.append(ipaddress.ip_network(item.strip(), strict=False))
        except ValueError as exc:
            raise ImproperlyConfigured(f"TRUSTED_PROXIES: {item!r} is not an address or network: {exc}") from exc
    return tuple(networks)


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:  # [::1]:8000
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # 192.0.2.1:8000
        text = text.split(":", 1)[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _trusted(address: str, proxies: Sequence[Network]) -> bool:
    parsed = _address(address)
    return parsed is not None and any(parsed in network for network in proxies)


def client_address(peer: str | None, forwarded_for: str | None, proxies: Sequence[Network]) -> str | None:
    """The client's address: `peer` itself unless `peer` is a trusted proxy; then the rightmost untrusted hop."""
    if not peer or not forwarded_for or not _trusted(peer, proxies):
        return peer
    for hop in reversed(forwarded_for.split(",")):
        if not _trusted(hop, proxies):
            parsed = _address(hop)
            # Garbage from a client behind our proxy: the proxy is the only address we can vouch for.
            return str(parsed) if parsed is not None else peer
    return peer  # every hop is one of ours: the request started inside


def trusted_proxies() -> tuple[Network, ...]:
    return _networks(tuple(getattr(settings, "TRUSTED_PROXIES", ())))


def request_client_address(request: Any) -> str | None:
    """For an HttpRequest (e.g. django-axes' client IP callable)."""
    meta: Mapping[str, str] = request.META
    return client_address(meta.get("REMOTE_ADDR"), meta.get("HTTP_X_FORWARDED_FOR"), trusted_proxies())


def scope_client_address(scope: Mapping[str, Any]) -> str | None:
    """For an ASGI scope (a WebSocket handshake): its `client` and its `x-forwarded-for` headers."""
    client = scope.get("client")
    peer = str(client[0]) if client else None
    forwarded = [value.decode("latin-1") for name, value in scope.get("headers", ()) if name == b"x-forwarded-for"]
    return client_address(peer, ",".join(forwarded) or None, trusted_proxies())
