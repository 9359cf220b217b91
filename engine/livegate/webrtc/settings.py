"""WebRTC settings (`livegate_settings.webrtc_*`), checked when the config loads. No aiortc here: the
config parses them whether or not the `webrtc` extra is installed.

    webrtc_ice_servers: [{urls: "stun:stun.example.org:3478"},
                         {urls: "turn:turn.example.org:3478", username: u, credential: p}]
    webrtc_host_addresses: [10.0.0.5]      local addresses for host candidates (default: every interface
                                           but loopback, as ICE wants; 127.0.0.1 for a one-machine setup)
    webrtc_udp_ports: 40000-40999          the UDP ports host candidates bind (default: any ephemeral port)
    webrtc_max_calls: 200                  calls one instance holds at once (default: no limit)
    webrtc_connect_timeout_s: 20           a call whose peer has not connected (ICE + DTLS) by then ends
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any

KEYS = ("webrtc_ice_servers", "webrtc_host_addresses", "webrtc_udp_ports", "webrtc_max_calls",
        "webrtc_connect_timeout_s")
_ICE_URL = re.compile(r"^(stun|stuns|turn|turns):[^\s]+$")


class SettingsError(ValueError):
    """A bad webrtc_* setting, phrased for the config's author (config.py turns it into a ConfigError)."""


@dataclass(frozen=True)
class IceServer:
    """A STUN or TURN server as browsers write it (RTCIceServer)."""

    urls: tuple[str, ...]
    username: str | None = None
    credential: str | None = None

    def __repr__(self) -> str:  # the credential never reaches a log
        return f"IceServer({', '.join(self.urls)})"


@dataclass(frozen=True)
class WebRTCSettings:
    ice_servers: tuple[IceServer, ...] = ()
    host_addresses: tuple[str, ...] | None = None
    udp_ports: tuple[int, int] | None = None
    max_calls: int | None = None
    connect_timeout_s: float = 20.0


def parse_settings(settings: dict[str, Any]) -> WebRTCSettings:
    """The webrtc_* keys of `livegate_settings`."""
    servers = settings.get("webrtc_ice_servers") or []
    if not isinstance(servers, list):
        raise SettingsError("livegate_settings.webrtc_ice_servers: expected a list of {urls, username, credential}")
    return WebRTCSettings(
        ice_servers=tuple(_ice_server(entry, i) for i, entry in enumerate(servers)),
        host_addresses=_addresses(settings.get("webrtc_host_addresses")),
        udp_ports=_ports(settings.get("webrtc_udp_ports")),
        max_calls=_positive_int(settings, "webrtc_max_calls"),
        connect_timeout_s=_positive(settings, "webrtc_connect_timeout_s", WebRTCSettings.connect_timeout_s),
    )


def _ice_server(entry: Any, index: int) -> IceServer:
    where = f"livegate_settings.webrtc_ice_servers[{index}]"
    if not isinstance(entry, dict) or "urls" not in entry:
        raise SettingsError(f"{where}: expected {{urls: ..., username: ..., credential: ...}}")
    unknown = sorted(set(entry) - {"urls", "username", "credential"})
    if unknown:
        raise SettingsError(f"{where}.{unknown[0]}: unknown key; known keys: urls, username, credential")
    urls = entry["urls"] if isinstance(entry["urls"], list) else [entry["urls"]]
    for url in urls:
        if not isinstance(url, str) or not _ICE_URL.match(url):
            raise SettingsError(f"{where}.urls: {url!r} is not a stun:, stuns:, turn: or turns: URL")
    for name in ("username", "credential"):
        if entry.get(name) is not None and not isinstance(entry[name], str):
            raise SettingsError(f"{where}.{name}: expected a string")
    if any(u.startswith("turn") for u in urls) and not (entry.get("username") and entry.get("credential")):
        raise SettingsError(f"{where}: a TURN server needs a username and a credential")
    return IceServer(tuple(urls), entry.get("username"), entry.get("credential"))


def _addresses(value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    where = "livegate_settings.webrtc_host_addresses"
    if not isinstance(value, list) or not value:
        raise SettingsError(f"{where}: expected a non-empty list of IP addresses")
    for address in value:
        try:
            ipaddress.ip_address(address)
        except (TypeError, ValueError):
            raise SettingsError(f"{where}: {address!r} is not an IP address") from None
    return tuple(value)


def _ports(value: Any) -> tuple[int, int] | None:
    if value is None:
        return None
    where = "livegate_settings.webrtc_udp_ports"
    low: Any
    high: Any
    if isinstance(value, str) and re.fullmatch(r"\d+-\d+", value.strip()):
        low, high = (int(p) for p in value.strip().split("-"))
    elif isinstance(value, list) and len(value) == 2:
        low, high = value
    else:
        raise SettingsError(f"{where}: expected a range such as 40000-40999 (or [40000, 40999])")
    if not all(isinstance(p, int) and not isinstance(p, bool) for p in (low, high)) or not 1024 <= low <= high <= 65535:
        raise SettingsError(f"{where}: expected ports from 1024 to 65535, the first no larger than the last")
    return low, high


def _positive_int(settings: dict[str, Any], key: str) -> int | None:
    value = settings.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise SettingsError(f"livegate_settings.{key}: expected a positive integer")
    return value


def _positive(settings: dict[str, Any], key: str, default: float) -> float:
    value = settings.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise SettingsError(f"livegate_settings.{key}: expected a positive number of seconds")
    return float(value)
