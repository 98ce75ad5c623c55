"""Modules with files beside them, in real Chromium tabs: Pyodide imports what the root sends.

A tab computes a module that imports a sibling module, a sibling package, an
installed pure-Python package and one only the root's PYTHONPATH has, with
the same output as ``--local``; a module that needs a compiled package is
turned down by the tab at once, saying why, while a native volunteer computes.
"""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from browser_helpers import local_output, skip_without_browser, wait_until
from test_dependencies import COMPILED, EXTRA, FILES, MODULE, expected, write_tree

skip_without_browser("BROWSER TESTS OF MODULES WITH DEPENDENCIES")

from playwright.sync_api import Page  # noqa: E402

READY_SECONDS = 90


def state(page: Page) -> dict[str, object]:
    return page.evaluate("() => ({state: pando.state, computed: pando.computed, "
                         "ready: pando.pool ? pando.pool.readyCount : 0})")


@pytest.mark.timeout(240)
def test_a_tab_imports_the_files_and_packages_the_root_sends(tmp_path: Path, tabs, start_root,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    folder, extra = tmp_path / "project", tmp_path / "extra"
    write_tree(folder, {"work.py": textwrap.dedent(MODULE), **FILES})
    write_tree(extra, EXTRA)
    monkeypatch.setenv("PYTHONPATH", str(extra))  # the root's and --local's: tinypkg is installed there only
    items = [str(n) for n in range(1, 41)]
    reference = local_output(folder / "work.py", items, tmp_path)
    assert reference == expected(items).decode()

    root = start_root(folder / "work.py")
    page = tabs.open(root.page_url("tab", 2))
    wait_until(lambda: state(page)["ready"] >= 2, READY_SECONDS, "two Pyodide workers to be ready")
    root.feed(items)
    assert root.wait(120) == 0, root.stderr.text
    assert root.output == reference
    assert state(page)["computed"] == len(items)


@pytest.mark.timeout(180)
def test_a_tab_turns_down_a_module_that_needs_a_compiled_package(tmp_path: Path, tabs, start_root,
                                                                 start_volunteer) -> None:
    pytest.importorskip("greenlet", reason="greenlet (a dependency of playwright) is the compiled package used here")
    module = tmp_path / "compiled.py"
    module.write_text(textwrap.dedent(COMPILED))
    root = start_root(module)
    root.stderr.wait_for(lambda text: "browsers cannot run compiled.py: it needs greenlet" in text, 10,
                         "the root to say browsers cannot run it")
    page = tabs.open(root.page_url("<b>tab</b>", 1))
    wait_until(lambda: state(page)["state"] == "broken", 30, "the page to turn the module down")
    assert page.text_content("#state-text") == "This browser cannot run the module"
    assert page.text_content("#problem-text") == "The module needs packages that browsers cannot have."
    details = page.text_content("#problem-details")
    assert "compiled.py needs greenlet (compiled extension modules), which a browser cannot have" in details, details
    assert page.evaluate("() => pando.pool") is None, "the tab started Python for a module it cannot run"
    root.stderr.wait_for(lambda text: "(<b>tab</b>) cannot run the module: compiled.py needs greenlet" in text, 10,
                         "the root to report the tab's refusal")

    start_volunteer(root.join_url)
    root.feed(["1", "2", "3"])
    assert root.wait(60) == 0, root.stderr.text
    assert root.output == "3\n6\n9\n"
    assert state(page)["state"] == "broken" and state(page)["computed"] == 0
