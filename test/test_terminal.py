"""A clean terminal: real pando processes on a real pseudo-terminal.

Results, messages and the module's prints each stand alone on their lines;
the progress line never has anything glued to it, even when stdout and stderr
are the same terminal.
"""
from __future__ import annotations

import fcntl
import json
import os
import re
import struct
import subprocess
import termios
import textwrap
import threading

import pytest

from conftest import EXAMPLES, PANDO, Processes

pytestmark = pytest.mark.timeout(120)

FAST = str(EXAMPLES / "square_fast.py")

SLOW_AND_CHATTY = """
import sys
import time
import pando

@pando.function
def slow(x):
    time.sleep(0.02)
    if x % 10 == 0:
        print(f"note-{x}", file=sys.stderr, flush=True)
    return f"result-{x}"
"""

_CSI = re.compile(r"\x1b\[[0-9;?]*([A-Za-z])")


def screen(output: bytes) -> list[str]:
    """The lines a terminal shows after ``output``: characters overwrite, ``\\r`` goes back to the
    start of the line, ``\\n`` starts the next one, ``ESC [ K`` erases to the end of the line."""
    text = output.decode("utf-8", "replace")
    rows: list[list[str]] = [[]]
    column = 0
    position = 0
    while position < len(text):
        char = text[position]
        sequence = _CSI.match(text, position) if char == "\x1b" else None
        if sequence is not None:
            if sequence.group(1) == "K":
                del rows[-1][column:]
            position = sequence.end()
            continue
        if char == "\r":
            column = 0
        elif char == "\n":
            rows.append([])
            column = 0
        else:
            row = rows[-1]
            row.extend(" " * (column + 1 - len(row)))
            row[column] = char
            column += 1
        position += 1
    return ["".join(row) for row in rows]


class Terminal:
    """A pseudo-terminal whose every output byte is kept."""

    def __init__(self) -> None:
        self.master, self.slave = os.openpty()
        # A wide terminal: the progress line is cut to its width, never wrapped.
        fcntl.ioctl(self.slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))
        self._output = bytearray()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:  # EIO: every process that had the terminal open has closed it
                return
            if not chunk:
                return
            self._output.extend(chunk)

    def type(self, data: bytes) -> None:
        os.write(self.master, data)

    def close_slave(self) -> None:
        """Once the processes that use it started: its end then comes when theirs does."""
        os.close(self.slave)

    def output(self) -> bytes:
        self._reader.join(10)
        os.close(self.master)
        return bytes(self._output)


def test_results_never_share_the_progress_line(procs: Processes) -> None:
    path = procs.tmp / "chatty.py"
    path.write_text(textwrap.dedent(SLOW_AND_CHATTY))
    terminal = Terminal()
    # stdout and stderr are the same terminal; the items come on the command line.
    root = procs.popen([PANDO, str(path), "--port", "0", "--workers", "1", *map(str, range(1, 121))],
                       stdin=subprocess.DEVNULL, stdout=terminal.slave, stderr=terminal.slave)
    terminal.close_slave()
    assert root.wait(90) == 0
    output = terminal.output()
    assert output.count(b" written, ") >= 3, "the progress line was drawn while results came"
    lines = screen(output)
    assert [line for line in lines if "result-" in line] == [f"result-{i}" for i in range(1, 121)], output
    assert [line for line in lines if "note-" in line] == [f"note-{i}" for i in range(10, 121, 10)], output
    assert not any(" written, " in line for line in lines), "the progress line is gone at the end"


def test_stdin_on_a_terminal_is_read_only_with_stdin(procs: Processes) -> None:
    terminal = Terminal()
    alone = procs.pando(FAST, stdin=terminal.slave)
    assert alone.wait(30) == 0, alone.err  # no item, and it did not wait for one
    assert alone.out == b""
    typed = procs.pando(FAST, "--local", "--stdin", stdin=terminal.slave, port=None)
    terminal.close_slave()
    terminal.type(b"3\n4\n\x04")  # two lines, then Ctrl-D
    assert typed.wait(30) == 0, typed.err
    assert typed.out == b"9\n16\n"
    terminal.output()


@pytest.mark.parametrize("switch, drawn", [([], False), (["--no-quiet"], True)])
def test_no_quiet_switches_the_configs_quiet_off(procs: Processes, switch: list[str], drawn: bool) -> None:
    (procs.home / ".pando" / "config.json").write_text(json.dumps({"quiet": True}))
    terminal = Terminal()
    root = procs.popen([PANDO, FAST, "--port", "0", *switch, "1", "2"],
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=terminal.slave)
    terminal.close_slave()
    assert root.wait(60) == 0
    output = terminal.output()
    assert (b"\xe2\x96\x88" in output) is drawn, output  # the QR code's full blocks
