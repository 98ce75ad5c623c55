"""The archive of files that travels with a module: made at the root, checked and unpacked by volunteers.

A bundle is a zip archive, base64-encoded into the ``module`` frame. Its
entries are files only, under two folders: ``module/`` holds the module's own
sibling modules and packages (first on ``sys.path``, as a script's folder is),
``site/`` the installed packages the root sends along (last on ``sys.path``:
a volunteer's own installation wins). Everything from the network is hostile,
so :func:`unpack` bounds the archive before reading it and refuses any entry
that is not a plain file under one of those folders.

Standard library only: browser volunteers run this file in Pyodide too.
"""
from __future__ import annotations

import base64
import binascii
import importlib
import io
import os
import stat
import sys
import zipfile
from typing import Iterable

#: Most files a bundle may hold, their most bytes unpacked, and the archive's most bytes.
MAX_FILES = 1000
MAX_BYTES = 8 * 1024 * 1024
MAX_ARCHIVE_BYTES = 4 * 1024 * 1024
#: Longest base64 text of an archive.
MAX_TEXT = (MAX_ARCHIVE_BYTES + 2) // 3 * 4

#: The two folders of a bundle: the module's own files, and installed packages sent along.
MODULE = "module"
SITE = "site"

_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)
_EPOCH = (1980, 1, 1, 0, 0, 0)  # zip's earliest date: the same files make the same archive


class BundleError(ValueError):
    """An archive that is not a valid bundle, or files too many or too big to make one."""


def size_text(size: int) -> str:
    """A size for people: KiB below a MiB, MiB above."""
    if size < 1024 * 1024:
        return f"{max(1, round(size / 1024))} KiB"
    return f"{size / (1024 * 1024):.1f} MiB"


def pack(files: Iterable[tuple[str, bytes]]) -> str:
    """The base64 text of a bundle holding ``(name, data)`` files; BundleError past the limits."""
    files = list(files)
    size = sum(len(data) for _, data in files)
    if len(files) > MAX_FILES or size > MAX_BYTES:
        raise BundleError(f"{len(files)} files, {size_text(size)}: over the limit of {MAX_FILES} files "
                          f"and {size_text(MAX_BYTES)}")
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in sorted(files):
            _check_name(name)
            info = zipfile.ZipInfo(name, _EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = (stat.S_IFREG | 0o644) << 16
            archive.writestr(info, data)
    if out.tell() > MAX_ARCHIVE_BYTES:
        raise BundleError(f"{size_text(out.tell())} compressed: over the limit of {size_text(MAX_ARCHIVE_BYTES)}")
    return base64.b64encode(out.getvalue()).decode("ascii")


def unpack(text: str, into: str) -> None:
    """Check a bundle from the network and write its files under the empty folder ``into``.

    Every entry is checked before anything is written: a plain file under
    ``module/`` or ``site/`` with a clean relative name, all within the limits;
    the size an entry declares bounds what is read of it. Raises BundleError
    otherwise (the caller then discards ``into``).
    """
    if len(text) > MAX_TEXT:
        raise BundleError(f"the archive is over {size_text(MAX_ARCHIVE_BYTES)}")
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise BundleError("the archive is not base64") from None
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            entries = archive.infolist()
            _check_entries(entries)
            for entry in entries:
                path = os.path.join(into, *entry.filename.split("/"))
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with archive.open(entry) as source:
                    content = source.read(entry.file_size + 1)
                if len(content) != entry.file_size:
                    raise BundleError(f"{entry.filename!r} is not the size it declares")
                with open(path, "xb") as target:  # never through anything already there
                    target.write(content)
    except BundleError:
        raise
    except (zipfile.BadZipFile, EOFError, OSError, RuntimeError, NotImplementedError, ValueError) as exc:
        raise BundleError(f"the archive cannot be unpacked: {exc}") from None


def _check_entries(entries: list[zipfile.ZipInfo]) -> None:
    if len(entries) > MAX_FILES:
        raise BundleError(f"the archive holds {len(entries)} files, over the limit of {MAX_FILES}")
    if sum(entry.file_size for entry in entries) > MAX_BYTES:
        raise BundleError(f"the archive unpacks to over {size_text(MAX_BYTES)}")
    names = set()
    for entry in entries:
        _check_name(entry.filename)
        if entry.filename in names:
            raise BundleError(f"the archive holds {entry.filename!r} twice")
        names.add(entry.filename)
        kind = stat.S_IFMT(entry.external_attr >> 16)
        if kind not in (0, stat.S_IFREG):  # 0: made where file modes are not recorded
            raise BundleError(f"{entry.filename!r} is not a plain file (a link or a device)")
        if entry.compress_type not in _METHODS or entry.flag_bits & 0x1:
            raise BundleError(f"{entry.filename!r} is encrypted or compressed in an unexpected way")


def _check_name(name: str) -> None:
    """A clean relative file name under module/ or site/: no '..', no absolute path, no backslash."""
    parts = name.split("/")
    if (len(parts) < 2 or parts[0] not in (MODULE, SITE) or "\\" in name
            or any(part in ("", ".", "..") or not part.isprintable() for part in parts)):
        raise BundleError(f"unsafe file name in the archive: {name!r}")


def use(folder: str) -> None:
    """Make a bundle unpacked in ``folder`` importable: its module's files first, its packages last."""
    sys.path.insert(0, os.path.join(folder, MODULE))
    sys.path.append(os.path.join(folder, SITE))
    importlib.invalidate_caches()
