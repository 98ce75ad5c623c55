"""The addresses volunteers can use to reach this machine."""
from __future__ import annotations

import fcntl
import socket
import struct

from pando.protocol import VOLUNTEER_PATH

_SIOCGIFADDR = 0x8915  # Linux ioctl: an interface's IPv4 address


def lan_ipv4() -> list[str]:
    """Every non-loopback IPv4 address of this machine's interfaces (Linux)."""
    found = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        for _, name in socket.if_nameindex():
            request = struct.pack("256s", name.encode()[:15])
            try:
                answer = fcntl.ioctl(probe.fileno(), _SIOCGIFADDR, request)
            except OSError:
                continue  # no IPv4 address on this interface
            address = socket.inet_ntoa(answer[20:24])
            if not address.startswith("127.") and address not in found:
                found.append(address)
    return found


def helper_url(bind: str, port: int) -> str:
    """The WebSocket URL for the root's own helper: loopback, unless the root listens on one address only."""
    page = f"http://127.0.0.1:{port}" if bind in ("", "0.0.0.0") else volunteer_urls(bind, port)[0]
    return "ws" + page.removeprefix("http") + VOLUNTEER_PATH


def volunteer_urls(bind: str, port: int) -> list[str]:
    """The page's URLs: on each LAN address then on localhost when listening everywhere (``bind``
    empty), else on the one address listened on."""
    if bind in ("", "0.0.0.0"):
        return [f"http://{address}:{port}" for address in lan_ipv4()] + [f"http://localhost:{port}"]
    host = f"[{bind}]" if ":" in bind else bind
    return [f"http://{host}:{port}"]
