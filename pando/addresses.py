"""The addresses volunteers can use to reach this machine."""
from __future__ import annotations

import fcntl
import socket
import struct

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


def volunteer_urls(bind: str, port: int) -> list[str]:
    """The page's URLs: on each LAN address then on localhost when listening everywhere (``bind``
    empty), else on the one address listened on."""
    if bind in ("", "0.0.0.0"):
        return [f"http://{address}:{port}" for address in lan_ipv4()] + [f"http://localhost:{port}"]
    host = f"[{bind}]" if ":" in bind else bind
    return [f"http://{host}:{port}"]
