"""Exit statuses, and the one exception type that carries a user-facing error."""
from __future__ import annotations

OK = 0
ITEM_FAILED = 1  # the function failed on an item (or the item lost too many holders)
USAGE = 2  # bad command line, config, module or port
BAD_INPUT = 3  # an input line that cannot be an item (not UTF-8, too long)
INTERRUPTED = 130  # Ctrl-C
BROKEN_PIPE = 141  # stdout closed downstream, as if killed by SIGPIPE


def silence_stdout() -> None:
    """After stdout was closed downstream: keep the interpreter's final flush quiet."""
    import os
    import sys

    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


class PandoError(Exception):
    """An error to show as one ``pando: …`` line on stderr, then exit with ``status``."""

    def __init__(self, message: str, status: int = USAGE) -> None:
        super().__init__(message)
        self.status = status
