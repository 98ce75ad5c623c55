"""The root's own helper: a volunteer process on the root's machine.

Without ``--start-idle`` the root computes too, through an ordinary volunteer
process (``--workers`` worker processes, one per core by default) that says it
is the root's own helper, and proves it with a secret of its own: the lender
gives it items only while no other volunteer is connected, and its function
never runs in the root's threads.

The root starts it first thing, before importing what the run needs: the
helper's own start (an interpreter, its imports, then its workers') then
overlaps the root's instead of following it. Where to join and the secret come
on its stdin once the root serves. So this module imports little.
"""
from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Callable

#: The directory holding this ``pando`` package: the helper imports exactly it.
_PACKAGE_PARENT = str(Path(__file__).resolve().parent.parent)


class Helper:
    """The helper process, started at once; it joins when :meth:`join` says where. A context
    manager that stops it.

    What it prints (the module's prints) goes to stderr, or with ``output``
    there line by line (the console, which keeps it off the progress line).
    """

    #: Times a helper that died is started again before the root gives up on it.
    RESTARTS = 3

    def __init__(self, log: Callable[[str], None], workers: int = 1,
                 output: Callable[[str], None] | None = None) -> None:
        self._log = log
        self._workers = workers
        self._output = output
        self._joining: bytes | None = None  # the line that tells it where to join, once known
        self._restarts = 0
        #: True once the helper died more often than it is restarted.
        self.gave_up = False
        self._process: subprocess.Popen[bytes] | None = self._start()

    def __enter__(self) -> Helper:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def _start(self) -> subprocess.Popen[bytes]:
        # -P and an explicit path: a `pando` folder in the working directory is never imported instead.
        entry = f"import sys; sys.path.insert(0, {_PACKAGE_PARENT!r}); from pando.helper import main; sys.exit(main())"
        process = subprocess.Popen(
            [sys.executable, "-P", "-c", entry, str(self._workers)],
            stdin=subprocess.PIPE,
            # The module's prints go where the root's own would.
            stdout=sys.stderr.fileno() if self._output is None else subprocess.PIPE,
            stderr=None if self._output is None else subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C is for the root, which then stops the helper
        )
        if self._output is not None:
            threading.Thread(target=_pass_lines, args=(process.stdout, self._output), name="pando-helper-output",
                             daemon=True).start()
        if self._joining is not None:
            self._hand_over(process)
        return process

    def join(self, url: str, secret: str) -> None:
        """Tell the helper to join at ``url`` with ``secret``."""
        # The secret goes through a pipe: a command line is visible to every user of the machine.
        self._joining = json.dumps({"url": url, "secret": secret}).encode() + b"\n"
        if self._process is not None:
            self._hand_over(self._process)

    def _hand_over(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stdin is not None and self._joining is not None
        try:
            process.stdin.write(self._joining)
            process.stdin.close()
        except BrokenPipeError:
            pass  # it died already: check() starts it again

    def check(self) -> None:
        """Start the helper again if it died while the run goes on (its items are lent again)."""
        if self._process is None or (code := self._process.poll()) is None:
            return
        if self._restarts == self.RESTARTS:
            self._log(f"pando: the root's own helper ended (status {code}) {self.RESTARTS + 1} times; "
                      "only volunteers compute from now on")
            self._process = None
            self.gave_up = True
            return
        self._restarts += 1
        self._log(f"pando: the root's own helper ended (status {code}); starting it again")
        self._process = self._start()

    def stop(self) -> None:
        """Give it a moment to end by itself (it got a bye), then make it."""
        if self._process is None:
            return
        if self._joining is None:
            self._process.kill()  # never told where to join: it holds nothing of the run's
        try:
            self._process.wait(2)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()


def _pass_lines(stream: BinaryIO, output: Callable[[str], None]) -> None:
    """Hand each line of ``stream`` to ``output`` until its end (the helper and its workers have ended)."""
    with stream:
        for line in stream:
            output(line.decode("utf-8", "replace").rstrip("\r\n"))


def main() -> int:
    """The helper process: its worker count is its argument; where to join and its secret come on stdin."""
    from pando.node import Node  # not at the top: the root imports this module before its own heavy imports

    line = sys.stdin.readline()
    if not line:
        return 0  # the root ended before it served
    given = json.loads(line)
    helper = Node(given["url"], given["secret"], workers=int(sys.argv[1]), name="root", role="local", quiet=True,
                  retry=False)
    return helper.run()
