"""The crash path of the root's threads.

Every thread of a run either finishes its job or dies of a bug. A death must
not pass for an ending (a dead reader is not the end of the input), so the
first unexpected exception in any of Pando's threads (named ``pando-…``), or
in a connection's handler run by the server, fails the whole run: one line on
stderr, the traceback under ``PANDO_DEBUG=threads``, and the root's one
shutdown path. Threads the user's module starts are its own business.
"""
from __future__ import annotations

import functools
import logging
import threading
import traceback
from typing import Any, Callable, TypeVar

LOG = logging.getLogger("pando.threads")

#: The start of the name of every thread Pando starts in the root.
THREAD_PREFIX = "pando-"

F = TypeVar("F", bound=Callable[..., Any])


class Supervisor:
    """Watches a run's threads; :attr:`failed` is set by the first one that dies of an exception."""

    def __init__(self, log: Callable[[str], None]) -> None:
        self._log = log
        self._lock = threading.Lock()
        self.failed = threading.Event()
        #: What failed the run first, in one line ("" until something did).
        self.reason = ""
        self._previous_hook = threading.excepthook

    def __enter__(self) -> Supervisor:
        threading.excepthook = self._hook
        return self

    def __exit__(self, *exc: object) -> None:
        threading.excepthook = self._previous_hook

    def guard(self, fn: F) -> F:
        """``fn`` for a thread someone else runs (the server's connection threads), which
        would log and swallow its exceptions."""

        @functools.wraps(fn)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except Exception as exc:
                self.crash(threading.current_thread().name, exc)
                return None

        return guarded  # type: ignore[return-value]

    def fail(self, reason: str, message: str) -> None:
        """End the run: ``reason`` in one line; ``message`` for stderr, if this is the first failure."""
        with self._lock:
            first = not self.failed.is_set()
            if first:
                self.reason = reason
            self.failed.set()
        if first:
            self._log(message)

    def crash(self, where: str, exc: BaseException) -> None:
        """A thread died of ``exc``: end the run (the first crash tells the user)."""
        details = "".join(traceback.format_exception(exc)).rstrip()
        LOG.debug("%s died:\n%s", where, details)
        reason = f"internal error in the {where} thread: {type(exc).__name__}: {exc}"
        self.fail(reason, f"pando: {reason}; stopping (PANDO_DEBUG=threads shows the traceback)")

    def _hook(self, args: threading.ExceptHookArgs) -> None:
        name = args.thread.name if args.thread is not None else ""
        if not name.startswith(THREAD_PREFIX) or args.exc_value is None:
            self._previous_hook(args)
        elif args.exc_type is not SystemExit:
            self.crash(name.removeprefix(THREAD_PREFIX), args.exc_value)
