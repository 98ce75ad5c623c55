"""Standard output is for results only.

Before a user module is loaded, the results get a private copy of file
descriptor 1, and descriptor 1 itself (with ``sys.stdout``) is pointed at
stderr: whatever the module prints, from Python, C code or a child process,
can never mix with the results.
"""
from __future__ import annotations

import os
import sys
from typing import BinaryIO


def claim() -> BinaryIO:
    """The results' stream on the original stdout; from now on fd 1 and ``sys.stdout`` lead to stderr."""
    sys.stdout.flush()
    results = os.dup(1)  # not inherited by child processes
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return open(results, "wb")


def silence(fd: int) -> None:
    """After the reader of ``fd`` went away: keep the interpreter's final flush quiet."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)
