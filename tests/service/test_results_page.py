"""The results page in headless Chromium while results arrive (issue 14).

The real app in a uvicorn process with the load generator's simulated cluster (`loadgen`): each
submission's writer stores trial and metric rows into the real Parquet store, paced over a
known time, as a sweep driver would. The browser (Playwright on Debian's chromium) opens the
experiment's page, sees Plotly's charts drawn with data, and sees them redrawn with more points
when new results are stored; a screenshot is saved. Then the list page's filters and pages.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from browser import Browser, chromium_path, open_browser
from loadgen.client import submission_body
from loadgen.common import TOKEN
from loadgen.server import LoadServer

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(chromium_path() is None, reason="Debian package `chromium` is missing"),
]
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoadServer]:
    # 4 trials x 12 reports written over 24 s: the page sees the experiment run for a while
    with LoadServer(
        tmp_path_factory.mktemp("page"), write_s=24.0, writer="thread", sse_poll_s=0.3
    ) as srv:
        yield srv


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with open_browser() as b:
        yield b


def _submit(server: LoadServer, name: str, epochs: int) -> str:
    r = httpx.post(
        f"{server.url}/v1/experiments",
        json=submission_body(name, (0, 1), epochs),
        headers=AUTH,
        timeout=30,
    )
    assert r.status_code == 202, r.text
    return str(r.json()["id"])


def _screenshot_dir(tmp_path: Path) -> Path:
    """``DIVSWEEP_TEST_ARTIFACTS`` when set (CI keeps it), else the test's tmp dir."""
    out = Path(os.environ.get("DIVSWEEP_TEST_ARTIFACTS", tmp_path))
    out.mkdir(parents=True, exist_ok=True)
    return out


def test_charts_render_and_update_while_results_arrive(
    server: LoadServer, browser: Browser, tmp_path: Path
) -> None:
    exp_id = _submit(server, "page-live", epochs=12)
    url = f"{server.url}/experiments/{exp_id}"
    # One page, watched until it has redrawn with more points than its first drawing had.
    grew = (
        "el.dataset.points && (el.dataset.first ??= el.dataset.points) && "
        "Number(el.dataset.points) > Number(el.dataset.first) && "
        "Number(el.dataset.updates) >= 2 && document.getElementById('curves').data?.length === 4"
    )
    shot = _screenshot_dir(tmp_path) / "results-page-live.png"
    html = browser.html_when(url, "#charts", grew, timeout_s=60, screenshot=shot)
    assert "data-status" in html and shot.stat().st_size > 20_000
    status = httpx.get(f"{server.url}/v1/experiments/{exp_id}", timeout=30).json()
    assert status["status"] in ("pending", "running"), "the update must come while it runs"

    # Once complete: both cells of the phase diagram with n = 2 seeds, 4 trials complete.
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if (
            httpx.get(f"{server.url}/v1/experiments/{exp_id}", timeout=30).json()["status"]
            == "complete"
        ):
            break
        time.sleep(0.5)
    done = _screenshot_dir(tmp_path) / "results-page-complete.png"
    browser.html_when(
        url,
        "#charts",
        "document.querySelectorAll('#trials tr.state-complete')"
        ".length === 4 && Number(el.dataset.points) === 48",
        screenshot=done,
    )
    phase = browser.evaluate_when(
        url,
        "document.querySelectorAll('#trials tr.state-complete').length === 4 && "
        "document.getElementById('phase').data?.length > 0",
        "document.getElementById('phase').data.map(t => ({x: t.x, n: t.text}))",
    )
    assert phase == [{"x": [10, 100], "n": ["n=2", "n=2"]}]
    assert done.stat().st_size > 20_000  # every report of every trial drawn (48 points)


def test_list_page_filters_and_pages(server: LoadServer, browser: Browser) -> None:
    ids = [_submit(server, f"listed-{i}", epochs=1) for i in range(3)]
    first = browser.html_when(f"{server.url}/?name=listed-&limit=2", "body", "true")
    assert ids[2] in first and ids[1] in first and ids[0] not in first  # newest first
    assert "1&ndash;2 of 3" in first or "1–2 of 3" in first
    second = browser.html_when(f"{server.url}/?name=listed-&limit=2&offset=2", "body", "true")
    assert ids[0] in second and ids[2] not in second and 'id="prev"' in second
    none = browser.html_when(f"{server.url}/?name=no-such-name", "#empty", "true")
    assert "No experiment matches" in none
    # the filter form keeps what was asked
    form = browser.html_when(f"{server.url}/?status=failed&name=listed-", "form.filters", "true")
    assert 'value="listed-"' in form and "<option selected" in form
