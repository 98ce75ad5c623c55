"""Computing on the root's own machine.

``--local`` runs the module in this process on one item after another, with no
server at all; the results go through the same reorder thread as a distributed
run's (they come in order already), which owns stdout and the journal.

Without ``--start-idle``, the root instead starts a helper process: an ordinary
volunteer (with ``--workers`` worker processes, one per core by default) that says it is the root's own helper (and proves it
with a secret of its own), so the lender gives it items only while no other
volunteer is connected, and its function never runs on the dispatcher's thread.
"""
from __future__ import annotations

import itertools
import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import BinaryIO, Callable, Iterable

from pando import items, status
from pando.access import Access
from pando.journal import Journal, digest
from pando.lender import MAX_LOSSES, Failure
from pando.module import Answer, PandoFunction
from pando.reader import replay
from pando.reorder import Reorder
from pando.node import Node
from pando.window import Window
from pando.workers import compute

#: Results computed but not yet written, at most: with a slow stdout the computing waits.
LOCAL_WINDOW_ITEMS = 1024
LOCAL_WINDOW_BYTES = 64 * 1024 * 1024

#: Tries an item that runs past ``--timeout`` gets with ``--local``: as many as
#: the lost holders after which a distributed run fails it.
LOCAL_TRIES = MAX_LOSSES


def run_local(
    fn: PandoFunction, batches: Iterable[list[str]], out: BinaryIO, journal_path: str | None = None,
    resume: bool = False, timeout: float | None = None, raw: bool = False,
) -> int:
    """Compute every item in order, here; return the exit status.

    With ``journal_path``, results are journaled as in a distributed run, and
    with ``resume`` the journal's results are written instead of computed.
    With a ``timeout`` (seconds), an item still running after it is
    interrupted and tried again, :data:`LOCAL_TRIES` times in all, before the
    run fails on it. With ``raw``, the function gets each item's text as it is.
    """
    items.allow_big_integers()
    journal = Journal.open(journal_path, resume) if journal_path is not None else None
    try:
        if journal is not None:
            batches = journal.skip_done(batches)  # before anything is written
        return _compute(fn, batches, out, journal, timeout, raw)
    finally:
        if journal is not None:
            journal.close()


def _compute(
    fn: PandoFunction, batches: Iterable[list[str]], out: BinaryIO, journal: Journal | None, timeout: float | None,
    raw: bool,
) -> int:
    window = Window(LOCAL_WINDOW_ITEMS, LOCAL_WINDOW_BYTES)
    reorder = Reorder(out, window, journal=journal)
    reorder.start()
    position = 0
    try:
        if journal is not None:
            position = replay(journal, window, reorder)
        for text in itertools.chain.from_iterable(batches):
            if not window.take(1, len(text), reorder.done):  # stdout was closed or cannot be written
                break
            answer = _compute_with_tries(fn, position, text, timeout, raw)
            if answer[0] != "ok":
                lost = answer[0] == "lost"
                details = f"{answer[2]}, on each of its {LOCAL_TRIES} tries" if lost else answer[3] or answer[2]
                reorder.fail(Failure(position, text, details))
                break
            if journal is not None:
                reorder.record(position, [digest(text)])
            reorder.deliver([(position, answer[2])])
            position += 1
    except status.PandoError:  # an input line that is not an item: the results before it are written first
        reorder.end(position)
        reorder.join()
        raise
    except BaseException:  # Ctrl-C: stop at once
        reorder.stop()
        reorder.join(5)
        raise
    reorder.end(position)
    reorder.join()
    return reorder.status


def _compute_with_tries(fn: PandoFunction, position: int, text: str, timeout: float | None, raw: bool) -> Answer:
    """One item, tried again while it runs past the timeout, up to :data:`LOCAL_TRIES` times."""
    for attempt in range(1, LOCAL_TRIES + 1):
        answer = compute(fn, position, text, timeout, raw)
        if answer[0] != "lost" or attempt == LOCAL_TRIES:
            break
        # Numbered from 1, as failures are (the position counts from 0).
        print(f"pando: item {position + 1}: {answer[2]}; trying it again ({attempt + 1} of {LOCAL_TRIES})",
              file=sys.stderr, flush=True)
    return answer


#: The directory holding this ``pando`` package: the helper imports exactly it.
_PACKAGE_PARENT = str(Path(__file__).resolve().parent.parent)


class Helper:
    """The root's own helper volunteer process, joining at ``url``; owned by the root.

    What it prints (the module's prints) goes to stderr, or with ``output``
    there line by line (the console, which keeps it off the progress line).
    """

    #: Times a helper that died is started again before the root gives up on it.
    RESTARTS = 3

    def __init__(
        self, url: str, access: Access, log: Callable[[str], None], workers: int = 1,
        output: Callable[[str], None] | None = None,
    ) -> None:
        self._url = url
        self._workers = workers
        self._access = access
        self._log = log
        self._output = output
        self._restarts = 0
        #: True once the helper died more often than it is restarted.
        self.gave_up = False
        self._process: subprocess.Popen[bytes] | None = self._start()

    def _start(self) -> subprocess.Popen[bytes]:
        # -P and an explicit path: a `pando` folder in the working directory is never imported instead.
        entry = f"import sys; sys.path.insert(0, {_PACKAGE_PARENT!r}); from pando.local import main; sys.exit(main())"
        process = subprocess.Popen(
            [sys.executable, "-P", "-c", entry],
            stdin=subprocess.PIPE,
            # The module's prints go where the root's own would.
            stdout=sys.stderr.fileno() if self._output is None else subprocess.PIPE,
            stderr=None if self._output is None else subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C is for the root, which then stops the helper
        )
        if self._output is not None:
            threading.Thread(target=_pass_lines, args=(process.stdout, self._output), name="pando-helper-output",
                             daemon=True).start()
        assert process.stdin is not None
        # The secret goes through a pipe: a command line is visible to every user of the machine.
        given = {"url": self._url, "secret": self._access.helper_secret, "workers": self._workers}
        process.stdin.write(json.dumps(given).encode() + b"\n")
        process.stdin.close()
        return process

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
    """The helper process: its URL, secret and worker count come on stdin."""
    given = json.loads(sys.stdin.readline())
    helper = Node(given["url"], given["secret"], workers=given["workers"], name="root", role="local", quiet=True,
                  retry=False)
    return helper.run()
