"""Computing on the root's own machine.

``--local`` runs the module in this process on one item after another, with no
server at all; the results go through the same reorder thread as a distributed
run's (they come in order already), which owns stdout and the journal.

Without ``--start-idle`` the root computes through a helper process instead
(:mod:`pando.helper`).
"""
from __future__ import annotations

import itertools
import sys
from typing import BinaryIO, Iterable

from pando import items, status
from pando.journal import Journal, digest
from pando.lender import MAX_LOSSES, Failure
from pando.module import Answer, PandoFunction
from pando.reader import replay
from pando.reorder import Reorder
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
