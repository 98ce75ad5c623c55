"""Who may join a run: the join key, the helper's secret, and the Origin rule.

The join key is generated once per user and kept in ``~/.pando/join-key``
(mode 0600), so a phone's bookmark and a volunteer that stays keep working
from one run to the next. It travels in the URL's fragment, which browsers
never send in a request line, and then in the ``hello`` frame.
"""
from __future__ import annotations

import hmac
import os
import re
import secrets
from pathlib import Path
from urllib.parse import urlsplit

from websockets.http11 import Request
from websockets.sync.server import ServerConnection

from pando import protocol
from pando.link import Link
from pando.status import PandoError

#: What a join key may look like: URL-safe, long enough not to be guessed.
KEY_PATTERN = re.compile(r"[A-Za-z0-9_-]{16,128}")


def key_file() -> Path:
    return Path(os.environ.get("HOME", "~")).expanduser() / ".pando" / "join-key"


def check_key(key: str, where: str) -> str:
    """``key`` if it is a usable join key; PandoError naming ``where`` it came from otherwise."""
    if not KEY_PATTERN.fullmatch(key):
        raise PandoError(f"{where}: a join key is 16 to 128 characters among A-Z a-z 0-9 _ -")
    return key


def user_key(file: Path | None = None) -> str:
    """This user's join key: read from ``file``, or made (128 random bits and more) and saved there."""
    file = file or key_file()
    try:
        return check_key(file.read_text(encoding="ascii").strip(), str(file))
    except FileNotFoundError:
        pass
    except (OSError, UnicodeDecodeError) as exc:
        raise PandoError(f"cannot read {file}: {exc}") from None
    key = secrets.token_urlsafe(24)  # 192 bits
    try:
        file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # O_EXCL: two runs starting at once must not each write a different key.
        fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return user_key(file)
    except OSError as exc:
        raise PandoError(f"cannot save the join key in {file}: {exc.strerror}") from None
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(key + "\n")
    return key


class Access:
    """The run's two secrets: the join key for volunteers and viewers, another for the root's own helper."""

    def __init__(self, join_key: str) -> None:
        self.join_key = join_key
        self.helper_secret = secrets.token_urlsafe(24)

    def admits(self, key: str, role: str) -> bool:
        """Whether ``key`` opens the door for ``role`` (constant time)."""
        expected = self.helper_secret if role == "local" else self.join_key
        return hmac.compare_digest(key.encode(), expected.encode())


def same_origin(request: Request) -> bool:
    """False for a WebSocket handshake that a page from another site started.

    Browsers always send ``Origin``; a page served by the root itself has the
    root's scheme, host and port there, the same as the ``Host`` it asked. Native
    clients send no Origin and pass; they still need the key.
    """
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    host = request.headers.get("Host", "")
    parts = urlsplit(origin)
    return parts.scheme in ("http", "https") and parts.netloc.lower() == host.lower()


def refuse(connection: Link | ServerConnection, message: str) -> None:
    """Send ``bye refused`` with ``message`` and close: all an uninvited peer ever gets."""
    connection.send(protocol.encode(protocol.Bye("refused", message)))
    connection.close(1008, "refused")


def fragment(key: str) -> str:
    """The URL fragment that carries the key, in the page's ``#name=value;`` form."""
    return f"#key={key};"
