"""What a module needs beside it: found at the root, sent to volunteers as a bundle.

Sent, as found by reading ``import`` statements (never by running anything):

- the modules (``NAME.py``) and regular packages (``NAME/`` with an
  ``__init__.py``) in the module's own folder that it imports, and those that
  these import, and so on. Nothing else in that folder goes: not the other
  files, not folders without ``__init__.py`` (data, virtual environments).
  Inside a package, everything but hidden entries, ``__pycache__``, bytecode
  and symbolic links.
- the installed packages those import that are neither the standard library
  nor ``pando``, found where the root itself imports them, with their
  distribution's METADATA, and the packages they import in turn (a namespace
  package, without ``__init__.py``, is not sent).

An installed package with compiled extension modules is not sent (a browser
cannot load it, and another machine may need another build), nor one too big
for the bundle's limits: the module is then *native only*, for pando-volunteer
processes, which import it from their own installation. Imports made by
``importlib.import_module`` or ``__import__`` are not seen.
"""
from __future__ import annotations

import ast
import importlib.machinery
import importlib.metadata
import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from pando import bundle, protocol
from pando.bundle import BundleError, size_text

#: Modules that are everywhere a module runs, and never sent.
PRESENT = frozenset(sys.stdlib_module_names) | frozenset(sys.builtin_module_names) | {"pando"}

#: What to do about a module whose own files are too many or too big.
_ADVICE = "keep data files out of the packages beside the module, and give volunteers their data as items"


@dataclass(frozen=True)
class Shipment:
    """What travels with a module: its bundle (base64, "" for none), and what browsers lack, as text."""

    bundle: str = ""
    #: One entry per package a browser cannot have: its name and why.
    native_only: tuple[str, ...] = ()
    files: int = 0
    size: int = 0


@dataclass(frozen=True)
class _File:
    name: str  # in the bundle
    path: Path
    size: int


def imports(source: str, library: bool = False) -> dict[str, bool]:
    """The top-level names ``source`` imports absolutely, each with whether it needs it.

    An import inside a ``try`` is optional: the code copes without it. In a
    library (an installed package), so is any import below the file's top
    level: libraries import their optional extras lazily, in functions.
    """
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return {}  # not Python that this interpreter reads: nothing to follow
    found: dict[str, bool] = {}

    def visit(node: ast.AST, optional: bool) -> None:
        for child in ast.iter_child_nodes(node):
            names: list[str] = []
            if isinstance(child, ast.Import):
                names = [alias.name for alias in child.names]
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                names = [child.module]
            for name in names:
                top = name.partition(".")[0]
                found[top] = found.get(top, False) or not optional
            visit(child, optional or library or isinstance(child, (ast.Try, ast.TryStar)))

    visit(tree, False)
    return found


def find(module_path: str) -> Shipment:
    """What the module at ``module_path`` needs sent; BundleError if its own files are over the limits."""
    folder = Path(module_path).resolve().parent
    local: list[_File] = []
    site: list[_File] = []
    native_only: list[str] = []
    # Names settled: sent, present everywhere, or needed and not sendable (an optional name that
    # cannot be sent stays open: a later import may need it).
    settled: set[str] = set(PRESENT)
    pending = list(imports(_text(Path(module_path))).items())
    distributions = importlib.metadata.packages_distributions()
    while pending:
        pending.sort(key=lambda entry: not entry[1])  # needed ones first: optional ones cannot crowd them out
        name, required = pending.pop(0)
        if name in settled:
            continue
        sibling = _sibling(folder, name)
        if sibling is not None:
            settled.add(name)
            files = _files(sibling, bundle.MODULE, folder)
            local.extend(files)
            _check_own(local, module_path)
            if _compiled(files):  # the user's own build: sent, for native volunteers like this machine
                native_only.append(f"{name} (compiled extension modules)")
            pending.extend(_imported(files, library=False))
            continue
        installed = _installed(name)
        if installed is None:
            continue  # not installed here either: an optional import (a needed one stopped the root's own load)
        label = ", ".join(sorted(set(distributions.get(name, [name]))))
        files = _files(installed, bundle.SITE, installed.parent)
        why = ""
        if _compiled(files):
            why = "compiled extension modules"
        else:
            files += _metadata(distributions.get(name, []))
            if not _fits(local + site + files):
                why = f"{size_text(sum(file.size for file in files))}, too big to send"
        if not why:
            settled.add(name)
            site.extend(files)
            pending.extend(_imported(files, library=True))
        elif required:
            settled.add(name)
            native_only.append(f"{label} ({why})")
    lacking = tuple(entry[: protocol.MAX_NAME] for entry in native_only[: protocol.MAX_NATIVE_ONLY])
    chosen = {file.name: file for file in local + site}  # a distribution's METADATA may come twice
    if not chosen:
        return Shipment(native_only=lacking)
    try:
        text = bundle.pack((file.name, file.path.read_bytes()) for file in chosen.values())
    except OSError as exc:
        raise BundleError(f"cannot read {exc.filename}: {exc.strerror}") from None
    except BundleError as exc:  # compressed, still over the limit: data that does not compress
        raise BundleError(f"the files {os.path.basename(module_path)} imports are over the limit for volunteers "
                          f"({exc}): {_ADVICE}") from None
    return Shipment(text, lacking, len(chosen), sum(file.size for file in chosen.values()))


def _imported(files: list[_File], library: bool) -> list[tuple[str, bool]]:
    """What the Python files among ``files`` import, each name with whether it is needed."""
    return [pair for file in files if file.name.endswith(".py")
            for pair in imports(_text(file.path), library).items()]


def _text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return ""  # unreadable here: sent as it is, its imports not followed


def _sibling(folder: Path, name: str) -> Path | None:
    """The module or regular package ``name`` in ``folder``, if there is one."""
    package = folder / name
    if (package / "__init__.py").is_file():
        return package
    module = folder / f"{name}.py"
    return module if module.is_file() else None


def _installed(name: str) -> Path | None:
    """Where the root imports the top-level module ``name`` from (a file or a package folder), if anywhere."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    # A built-in module has no file, a namespace package (no __init__.py) no origin: neither is sent.
    if spec is None or spec.origin is None or not os.path.isfile(spec.origin):
        return None
    return Path(spec.origin).parent if spec.submodule_search_locations is not None else Path(spec.origin)


def _files(top: Path, prefix: str, base: Path) -> list[_File]:
    """The files to send of a module file or package folder, named ``prefix/`` + their path from ``base``.

    Stops past the bundle's file limit: a folder that big is refused anyway.
    """
    if top.is_file():
        return [_File(f"{prefix}/{top.relative_to(base).as_posix()}", top, top.stat().st_size)]
    found: list[_File] = []
    for where, folders, names in os.walk(top):  # a linked folder is listed, never entered
        folders[:] = sorted(name for name in folders if not name.startswith(".") and name != "__pycache__"
                            and not os.path.islink(os.path.join(where, name)))
        for name in sorted(names):
            path = Path(where, name)
            if name.startswith(".") or name.endswith((".pyc", ".pyo")) or path.is_symlink():
                continue
            found.append(_File(f"{prefix}/{path.relative_to(base).as_posix()}", path, path.stat().st_size))
        if len(found) > bundle.MAX_FILES:
            break
    return found


def _metadata(names: list[str]) -> list[_File]:
    """The METADATA of these distributions (``importlib.metadata.version`` then works where they are sent)."""
    found = []
    for name in names:
        try:
            files = importlib.metadata.distribution(name).files or []
        except importlib.metadata.PackageNotFoundError:
            continue
        for file in files:
            if file.name == "METADATA" and file.parent.name.endswith(".dist-info"):
                path = Path(str(file.locate()))
                if path.is_file():
                    found.append(_File(f"{bundle.SITE}/{file.parent.name}/METADATA", path, path.stat().st_size))
    return found


def _compiled(files: list[_File]) -> bool:
    return any(file.name.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES)) for file in files)


def _fits(files: list[_File]) -> bool:
    return len(files) <= bundle.MAX_FILES and sum(file.size for file in files) <= bundle.MAX_BYTES


def _check_own(local: list[_File], module_path: str) -> None:
    """Refuse a module whose own files alone are over the limits, saying what to do."""
    if _fits(local):
        return
    biggest = max(local, key=lambda file: file.size)
    raise BundleError(
        f"the files {os.path.basename(module_path)} imports from its folder are over the limit for volunteers "
        f"({len(local)}{'+' if len(local) > bundle.MAX_FILES else ''} files, "
        f"{size_text(sum(file.size for file in local))}; at most {bundle.MAX_FILES} files and "
        f"{size_text(bundle.MAX_BYTES)}); the biggest is {biggest.path} ({size_text(biggest.size)}): {_ADVICE}"
    )
