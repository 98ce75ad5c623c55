"""Loading a user module and calling its function, the same way everywhere.

A module exposes, under the key ``'/pando/1.0.0'``, a function taking
``(value, callback)``; it calls ``callback(err, result)`` once, with ``err``
None on success. :func:`function` builds that form from a plain or an ``async``
function. This file uses the standard library only: it also runs in Pyodide.
"""
from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import sys
import threading
import traceback
import types
from typing import Any, Callable, Iterator, NoReturn

from pando import items

PROTOCOL_KEY = "/pando/1.0.0"

Callback = Callable[[Any, Any], None]
PandoFunction = Callable[[Any, Callback], None]


class ModuleError(Exception):
    """A module that cannot be used: unreadable, invalid, or without the function."""


#: How an item ended: ("ok", id, line) or ("error", id, message, details).
Answer = tuple[Any, ...]


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
    """Read and load a module file; return its source and function."""
    try:
        with open(path, encoding="utf-8") as handle:
            source = handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise ModuleError(f"cannot read module {path}: {exc}") from None
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


def call(fn: PandoFunction, value: Any) -> tuple[Any, Any]:
    """Run ``fn`` on one value and wait for its callback: ``(err, result)``.

    An exception raised by ``fn`` itself comes back as ``err``.
    """
    outcome: list[tuple[Any, Any]] = []
    called = threading.Event()

    def callback(err: Any = None, result: Any = None) -> None:
        if not outcome:  # only the first call counts
            outcome.append((err, result))
            called.set()

    try:
        with exits_refused():
            fn(value, callback)
    except (Exception, SystemExit) as exc:  # an exit inside the function is that item's error
        return exc, None
    called.wait()
    return outcome[0]


@contextlib.contextmanager
def exits_refused() -> Iterator[None]:
    """While user code runs, ``os._exit`` raises SystemExit instead of ending the process at once.

    A runner then reports an exit at import as a broken module, and one inside
    the function as that item's error, instead of vanishing without a word.
    """
    real = os._exit

    def refuse(status: int) -> NoReturn:
        raise SystemExit(status)

    os._exit = refuse
    try:
        yield
    finally:
        os._exit = real


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
