"""Loading a user module and calling its function, the same way everywhere.

A module exposes, under the key ``'/pando/1.0.0'``, a function taking
``(value, callback)``; it calls ``callback(err, result)`` once, with ``err``
None on success. :func:`function` builds that form from a plain or an ``async``
function. This file uses the standard library only: it also runs in Pyodide.
"""
from __future__ import annotations

import inspect
import os
import queue
import sys
import threading
import time
import traceback
import types
from typing import TYPE_CHECKING, Any, Callable, NoReturn

from pando import items

if TYPE_CHECKING:
    import asyncio

PROTOCOL_KEY = "/pando/1.0.0"

Callback = Callable[[Any, Any], None]
PandoFunction = Callable[[Any, Callback], None]


class ModuleError(Exception):
    """A module that cannot be used: unreadable, invalid, or without the function."""


#: How an item ended: ("ok", id, line), ("error", id, message, details), or
#: ("lost", id, message) when its computation was given up (see :class:`Overrun`).
Answer = tuple[Any, ...]


def overrun_message(timeout: float) -> str:
    """What is said of an item that ran for longer than ``timeout`` seconds."""
    return f"it took longer than --timeout {timeout:g} s"


class Overrun(Exception):
    """An item ran for longer than the timeout :func:`call` was given."""

    def __init__(self, timeout: float) -> None:
        super().__init__(overrun_message(timeout))
        self.timeout = timeout


class _Alarm(BaseException):
    """Raised inside the user's function when its time is up.

    A BaseException, so that a module's ``except Exception`` does not swallow
    it (nor the adapters of :func:`function`, which report an Exception as the
    item's error).
    """


def function(fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Decorator: make ``fn(value) -> result`` (plain or ``async``) the module's function.

    It binds the callback form under ``'/pando/1.0.0'`` in the module that
    defines ``fn``, and returns ``fn`` unchanged so it can still be called.
    """
    if inspect.iscoroutinefunction(fn):
        adapter = _from_async(fn)
    else:
        adapter = _from_plain(fn)
    fn.__globals__[PROTOCOL_KEY] = adapter
    return fn


def _from_plain(fn: Callable[[Any], Any]) -> PandoFunction:
    def call(value: Any, callback: Callback) -> None:
        try:
            result = fn(value)
        except Exception as exc:  # the item's error, reported through the callback
            callback(exc, None)
        else:
            callback(None, result)

    return call


def _from_async(fn: Callable[[Any], Any]) -> PandoFunction:
    def call(value: Any, callback: Callback) -> None:
        async def run() -> None:
            try:
                result = await fn(value)
            except Exception as exc:
                callback(exc, None)
            else:
                callback(None, result)

        import asyncio  # here: a start-up cost (~30 ms) that only async functions need, in every worker

        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # CPython worker: no loop of its own, run one for the item
            asyncio.run(run())
        else:  # Pyodide (or any caller inside a loop): schedule on it
            task = loop.create_task(run())
            _pending.add(task)  # keep a reference until it is done
            task.add_done_callback(_pending.discard)

    return call


_pending: set[asyncio.Task[None]] = set()


def load(source: str, filename: str) -> PandoFunction:
    """Execute a module's source and return its checked ``'/pando/1.0.0'`` function."""
    stem = filename.rsplit("/", 1)[-1].removesuffix(".py") or "module"
    name = f"pando_user_{stem}"
    module = types.ModuleType(name)
    module.__file__ = filename
    # Registered so that pickling, dataclasses and typing can find the module.
    sys.modules[name] = module
    try:
        code = compile(source, filename, "exec")
    except SyntaxError as exc:
        raise ModuleError(f"{filename}:{exc.lineno}: syntax error: {exc.msg}") from None
    try:
        with exits_refused():
            exec(code, module.__dict__)
    except SystemExit as exc:
        raise ModuleError(f"{filename}: exited (status {exc.code!r}) while loading; a module must not exit") from None
    except Exception:
        raise ModuleError(f"{filename}: failed while loading:\n{traceback.format_exc().rstrip()}") from None
    fn = module.__dict__.get(PROTOCOL_KEY)
    if fn is None:
        raise ModuleError(
            f"{filename}: no function under '{PROTOCOL_KEY}'; add "
            f"globals()['{PROTOCOL_KEY}'] = f, or decorate f with @pando.function"
        )
    check(fn, filename)
    return fn


def load_file(path: str) -> tuple[str, PandoFunction]:
    """Read and load a module file, its folder first on ``sys.path`` as a script's is; return its source and function."""
    try:
        with open(path, encoding="utf-8") as handle:
            source = handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise ModuleError(f"cannot read module {path}: {exc}") from None
    sys.path.insert(0, os.path.dirname(os.path.abspath(path)))
    return source, load(source, path)


def check(fn: Any, filename: str) -> None:
    """Raise :class:`ModuleError` unless ``fn`` can be called as ``fn(value, callback)``."""
    if not callable(fn):
        raise ModuleError(f"{filename}: '{PROTOCOL_KEY}' is a {type(fn).__name__}, not a function")
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return  # a builtin without a signature: trust it
    try:
        signature.bind(None, None)
    except TypeError:
        raise ModuleError(
            f"{filename}: '{PROTOCOL_KEY}' must take (value, callback), but its signature is {signature}; "
            "for a one-argument function use @pando.function"
        ) from None


def call(fn: PandoFunction, value: Any, timeout: float | None = None) -> tuple[Any, Any]:
    """Run ``fn`` on one value and wait for its callback: ``(err, result)``.

    An exception raised by ``fn`` itself comes back as ``err``. With a
    ``timeout`` (seconds), :class:`Overrun` is raised once that much time has
    passed: the callback is waited for no longer, and in the main thread of a
    process that has ``SIGALRM`` the function itself is interrupted (an
    exception raised wherever it is, while SIGALRM is Pando's). Elsewhere
    (another thread, Pyodide) a function that never returns still holds this
    call: there, whoever runs it must stop it from outside.
    """
    outcome: list[tuple[Any, Any]] = []
    called: queue.SimpleQueue[None] = queue.SimpleQueue()  # made per item: far cheaper than an Event

    def callback(err: Any = None, result: Any = None) -> None:
        if not outcome:  # only the first call counts
            outcome.append((err, result))
            called.put(None)

    deadline = None if timeout is None else time.monotonic() + timeout
    disarm = _alarm_after(timeout) if timeout is not None else None
    try:
        try:
            with exits_refused():
                try:
                    fn(value, callback)
                except (Exception, SystemExit) as exc:  # an exit inside the function is that item's error
                    return exc, None
            if not outcome:  # it returned before calling back: wait for the callback
                try:
                    called.get(timeout=None if deadline is None else max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    raise _Alarm() from None  # it never called back in time
        finally:
            if disarm is not None:
                _stop(disarm)
    except _Alarm:
        assert timeout is not None
        raise Overrun(timeout) from None
    if isinstance(outcome[0][0], _Alarm):  # it caught the alarm and passed it on
        assert timeout is not None
        raise Overrun(timeout)
    return outcome[0]


#: Once the time is up, the alarm rings again this often (seconds, at least),
#: in case the function swallowed it (``except BaseException``).
_RING_AGAIN = 0.25


def _alarm_after(timeout: float) -> Callable[[], None] | None:
    """Make SIGALRM raise :class:`_Alarm` here in ``timeout`` seconds; return what stops it.

    None where that cannot work: not the main thread, or no ``setitimer``.
    """
    import signal  # here: this file also runs in Pyodide, which never gets this far

    if not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread():
        return None
    armed = [True]

    def ring(signum: int, frame: Any) -> None:
        if armed[0]:
            raise _Alarm()

    previous = signal.signal(signal.SIGALRM, ring)
    signal.setitimer(signal.ITIMER_REAL, timeout, max(timeout, _RING_AGAIN))

    def disarm() -> None:
        armed[0] = False
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)

    return disarm


def _stop(disarm: Callable[[], None]) -> None:
    """Run ``disarm`` to its end, even if the alarm rings just before it takes effect."""
    while True:
        try:
            disarm()
            return
        except _Alarm:
            pass  # rang at the very last moment: the item is over anyway


class exits_refused:  # noqa: N801 - used as a context manager, like contextlib's; a class costs less per item
    """While user code runs, ``os._exit`` raises SystemExit instead of ending the process at once.

    A runner then reports an exit at import as a broken module, and one inside
    the function as that item's error, instead of vanishing without a word.
    """

    def __enter__(self) -> None:
        self._real = os._exit
        os._exit = _refuse_exit

    def __exit__(self, *exc: object) -> None:
        os._exit = self._real


def _refuse_exit(status: int) -> NoReturn:
    raise SystemExit(status)


def answer(item_id: int, err: Any, result: Any) -> Answer:
    """The answer for an item whose function called back ``(err, result)``."""
    if err is not None:
        details = describe(err)
        lines = details.strip().splitlines()
        return ("error", item_id, lines[-1] if lines else "error", details)
    try:
        return ("ok", item_id, items.format(result))
    except items.ResultError as exc:
        return ("error", item_id, str(exc), "")


def describe(err: Any) -> str:
    """The text shown for an error passed to a callback or raised by a function.

    Frames of this file (the adapters, :func:`call`) are left out: the user
    wants to see their own code.
    """
    if not isinstance(err, BaseException):
        return str(err)
    tb = err.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(err), err, tb)).rstrip()
