"""The installed wheel serves browser volunteers that compute; a root without Pyodide gets a page that says why.

A real headless Chromium tab opens what the root printed: the first root is
the ``pando`` command of a fresh venv that has only the wheel (and its
dependencies) installed, so the page, Pyodide and the helper files all come
from the installed package.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable

import pytest

from browser_helpers import Root, Tabs, skip_without_browser, wait_until, write_module
from conftest import squares
from packaged import Venv

skip_without_browser("PACKAGE BROWSER TESTS")

from playwright.sync_api import Page  # noqa: E402

# The build and Pyodide's start in a tab take a while on a loaded machine.
pytestmark = pytest.mark.timeout(600)

READY_SECONDS = 90

SQUARE = """
    import pando

    @pando.function
    def square(x):
        return x * x
"""


def page_state(page: Page) -> dict[str, Any]:
    return page.evaluate(
        """() => ({
            state: pando.state,
            heading: document.querySelector('#state-text').textContent,
            problem: document.querySelector('#problem-text').textContent,
            details: document.querySelector('#problem-details').textContent,
            log: document.querySelector('#log').textContent,
        })"""
    )


def test_the_installed_wheel_serves_browser_volunteers_that_compute(
    installed: Venv, tmp_path: Path, start_root: Callable[..., Root], tabs: Tabs,
) -> None:
    root = start_root(write_module(tmp_path, "square.py", SQUARE), command=[installed.command("pando")])
    root.feed(map(str, range(1, 31)))
    tabs.open(root.page_url("from-the-wheel", 1))
    assert root.wait(READY_SECONDS + 30) == 0, root.stderr.text
    assert root.output == squares(range(1, 31)).decode()
    assert "Pyodide" not in root.stderr.text


def test_a_page_from_a_root_without_pyodide_says_why_at_once(
    without_pyodide: Path, start_root: Callable[..., Root], tabs: Tabs,
) -> None:
    root = start_root(write_module(without_pyodide, "square.py", SQUARE), command=[sys.executable, "-m", "pando"])
    root.feed(["1"], close=False)
    page = tabs.open(root.page_url("no-pyodide", 2))
    wait_until(lambda: page_state(page)["state"] == "broken", 30, "the page to give up")
    shown = page_state(page)
    assert shown["heading"] == "The root cannot serve Python"
    assert "the root has no Pyodide to serve (/node_modules/pyodide/pyodide.mjs: not found)" in shown["details"]
    assert "starting a new one" not in shown["log"]  # no worker was started again
    root.stderr.wait_for(lambda text: "no-pyodide" in text and "no Pyodide to serve" in text, 10,
                         "the root to hear why the page gave up")
