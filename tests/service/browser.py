"""Headless Chromium for page tests, driven by Playwright on Debian's ``chromium`` (Playwright
never downloads a browser here: it launches the system binary).

Playwright starts Chromium with a profile of its own and, on ``close``, stops the whole browser
(every child process) before it removes the profile; the hand-written DevTools client this
replaces removed the profile while Chromium's children still wrote to it, and a fresh clone's
test run once failed at that teardown (``OSError: Directory not empty: 'Default'``).

Example::

    with open_browser() as b:
        html = b.html_when("http://127.0.0.1:8000/", "#experiments", "true")
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


class Browser:
    """One headless browser; each call opens a fresh page and closes it afterwards."""

    def __init__(self, browser: Any) -> None:
        self.browser = browser

    def html_when(
        self,
        url: str,
        selector: str,
        ready: str,
        timeout_s: float = 60,
        screenshot: Path | None = None,
        element_only: bool = False,
    ) -> str:
        """Open ``url``; return the outerHTML of ``selector`` once the JS expression ``ready``
        (with ``el`` bound to the element) is true; save a full-page PNG to ``screenshot`` (with
        ``element_only``: of the element alone, e.g. one chart for the docs)."""
        from playwright.sync_api import TimeoutError as PlaywrightTimeout

        expr = (
            f"() => {{ const el = document.querySelector({json.dumps(selector)}); "
            f"return el && ({ready}) ? el.outerHTML : null; }}"
        )
        page = self.browser.new_page(viewport={"width": 1280, "height": 900})
        try:
            page.goto(url)
            try:
                handle = page.wait_for_function(expr, timeout=timeout_s * 1000, polling=250)
            except PlaywrightTimeout:
                body = page.evaluate("document.body ? document.body.outerHTML : ''")
                msg = f"{selector} never satisfied {ready}:\n{body[:3000]}"
                raise AssertionError(msg) from None
            if screenshot is not None and element_only:
                page.locator(selector).screenshot(path=str(screenshot))
            elif screenshot is not None:
                page.screenshot(path=str(screenshot), full_page=True)
            return str(handle.json_value())
        finally:
            page.close()

    def evaluate_when(self, url: str, ready: str, expression: str, timeout_s: float = 60) -> Any:
        """Open ``url``, wait until ``ready`` is true, then return ``expression``'s value."""
        page = self.browser.new_page()
        try:
            page.goto(url)
            page.wait_for_function(f"() => {ready}", timeout=timeout_s * 1000, polling=250)
            return page.evaluate(f"() => {expression}")
        finally:
            page.close()


@contextmanager
def open_browser() -> Iterator[Browser]:
    """Launch the system Chromium headless; closed (all processes, then the profile) on exit."""
    from playwright.sync_api import sync_playwright

    path = chromium_path()
    if path is None:
        raise RuntimeError("Debian package `chromium` is not installed")
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=path, headless=True, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            yield Browser(browser)
        finally:
            browser.close()
