"""Exit statuses, and the one exception type that carries a user-facing error."""
from __future__ import annotations

OK = 0
FAILED = 1  # the run failed: an item failed, results could not be written, or nothing could compute
USAGE = 2  # bad command line, config, module, join key, port or journal; an --arg-file that cannot be opened
BAD_INPUT = 3  # an input item that cannot be one (not UTF-8, too long), or input that cannot be read
INTERRUPTED = 130  # Ctrl-C
BROKEN_PIPE = 141  # stdout closed downstream, as if killed by SIGPIPE


class PandoError(Exception):
    """An error to show as one ``pando: …`` line on stderr, then exit with ``status``."""

    def __init__(self, message: str, status: int = USAGE) -> None:
        super().__init__(message)
        self.status = status
