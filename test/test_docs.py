"""The man page and the bash completion follow `pando --help`: made from it, current, and working."""
from __future__ import annotations

import importlib.util
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import PANDO, REPO
from pando import __version__, cli, usage

pytestmark = pytest.mark.timeout(60)

_spec = importlib.util.spec_from_file_location("generate", REPO / "docs" / "generate.py")
assert _spec is not None and _spec.loader is not None
generate = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(generate)

DOC = cli.__doc__ or ""
FORMS = {form for option in usage.options(DOC) for form in (option.short, option.longer) if form}


def test_help_shows_the_text_the_docs_are_made_from() -> None:
    shown = subprocess.run([PANDO, "--help"], capture_output=True, text=True, timeout=30)
    assert shown.returncode == 0 and shown.stdout == DOC.strip("\n") + "\n"


@pytest.mark.parametrize("path, make", [(generate.MAN_PAGE, lambda: generate.manpage(DOC, __version__)),
                                        (generate.COMPLETION, lambda: generate.completion(DOC))],
                         ids=["man page", "completion"])
def test_the_docs_are_what_the_help_text_makes(path: Path, make: object) -> None:
    assert path.read_text() == make(), f"{path.name} is stale: run `make docs`"  # type: ignore[operator]


@pytest.mark.skipif(shutil.which("groff") is None or shutil.which("man") is None, reason="no groff or man here")
def test_the_man_page_renders_cleanly_and_names_every_option() -> None:
    checked = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-z", str(generate.MAN_PAGE)],
                             capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0 and checked.stderr == ""
    shown = subprocess.run(["man", "-l", str(generate.MAN_PAGE)], capture_output=True, text=True, timeout=30,
                           env={"PATH": "/usr/bin:/bin", "MANPAGER": "cat", "MANWIDTH": "100", "LANG": "C.UTF-8"})
    assert shown.returncode == 0, shown.stderr
    text = shown.stdout.replace("\u2010", "-")  # a hyphen where a word was broken
    for heading in ("NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "ITEMS", "EXIT STATUS"):
        assert f"\n{heading}\n" in text
    words = set(text.replace(",", " ").replace("=", " ").split())
    assert FORMS <= words, f"not in the man page: {sorted(FORMS - words)}"


def complete(words: list[str], cwd: Path) -> list[str]:
    """What the completion offers for a command line whose last word is being typed, as bash calls it."""
    script = (f"source {shlex.quote(str(generate.COMPLETION))}; "
              f"COMP_WORDS=({' '.join(map(shlex.quote, words))}); COMP_CWORD={len(words) - 1}; _pando; "
              'printf "%s\\n" "${COMPREPLY[@]}"')
    done = subprocess.run(["bash", "--norc", "--noprofile", "-c", script], cwd=cwd, capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    return [line for line in done.stdout.split("\n") if line]


def test_the_completion_offers_the_real_option_set(tmp_path: Path) -> None:
    assert set(complete(["pando", "m.py", "-"], tmp_path)) == FORMS
    assert set(complete(["pando", "m.py", "--no-"], tmp_path)) == {f"--no-{key}" for key in cli.SWITCHES}
    assert complete(["pando", "--arg"], tmp_path) == ["--arg-file"]


def test_the_completion_offers_files_where_a_file_is_due(tmp_path: Path) -> None:
    for name in ("square.py", "items.txt", "-dash.txt"):
        (tmp_path / name).write_text("")
    assert complete(["pando", "sq"], tmp_path) == ["square.py"]
    assert sorted(complete(["pando", "square.py", "-a", ""], tmp_path)) == ["-dash.txt", "items.txt", "square.py"]
    assert complete(["pando", "square.py", "--journal", "=", "it"], tmp_path) == ["items.txt"]  # --journal=it
    assert complete(["pando", "square.py", "--port", ""], tmp_path) == []  # a number to type, not a file
    assert complete(["pando", "square.py", "--", "-d"], tmp_path) == ["-dash.txt"]  # after --, no options
