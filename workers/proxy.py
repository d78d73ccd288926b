"""Which HTTP proxy, if any, the API calls go through: a pure decision from settings and environment.

The rules, in order:

1. ``BATCHER_PROXY`` (or ``batcher --proxy URL``) is used for every call, loopback included;
   ``none`` turns every proxy off, the environment's too.
2. Otherwise the environment's ``HTTPS_PROXY`` / ``HTTP_PROXY`` (by the base URL's scheme; lower
   case too), then ``ALL_PROXY``, as curl and the OpenAI SDK read them: unless ``NO_PROXY`` names
   the host, and never for a loopback host (``127.0.0.0/8``, ``::1``, ``localhost``), so a
   corporate proxy never swallows the calls to ``batcher dev-relay``.

A proxy URL may carry credentials; ``proxy_secrets`` lists them for redaction.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from urllib.parse import urlsplit

NO_PROXY_WORD = "none"


def is_loopback(host: str) -> bool:
    """Whether a host name or address is this machine."""
    if host.lower() == "localhost" or host.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _env(env: Mapping[str, str], name: str) -> str | None:
    return env.get(name.lower()) or env.get(name.upper()) or None


def proxy_for(base_url: str, *, explicit: str | None, env: Mapping[str, str]) -> str | None:
    """The proxy URL for calls to ``base_url``, or None for a direct connection (rules above)."""
    if explicit:
        return None if explicit.strip().lower() == NO_PROXY_WORD else explicit.strip()
    parts = urlsplit(base_url)
    host = parts.hostname or ""
    if is_loopback(host):
        return None
    proxy = _env(env, f"{parts.scheme}_proxy") or _env(env, "all_proxy")
    if proxy is None:
        return None
    no_proxy = _env(env, "no_proxy")
    if no_proxy and bypassed(host, no_proxy):
        return None
    return proxy


def bypassed(host: str, no_proxy: str) -> bool:
    """Whether ``NO_PROXY`` names the host: ``*``, the host, a parent domain, or an address range."""
    host = host.lower().strip("[]")
    for entry in (e.strip().lower() for e in no_proxy.split(",")):
        if entry == "*":
            return True
        name = entry.lstrip("*").lstrip(".")
        name = (name.rsplit(":", 1)[0] if name.count(":") == 1 else name).strip("[]")  # no port
        if name and (host == name or host.endswith("." + name) or _in_network(host, name)):
            return True
    return False


def _in_network(host: str, entry: str) -> bool:
    try:
        return ipaddress.ip_address(host) in ipaddress.ip_network(entry, strict=False)
    except ValueError:
        return False


def proxy_secrets(proxy: str | None) -> list[str]:
    """The password of a proxy URL, to scrub from messages."""
    if not proxy:
        return []
    password = urlsplit(proxy).password
    return [password] if password else []
