"""The results page draws the phase boundary of a threshold search with ``over`` (issue 25).

The real app in a uvicorn process; the submitted ``smoke-frontier`` preset runs through the real
sweep driver on a local Ray of its own (`frontier_job.DriverRunner`), with the fake trial whose
threshold moves with the budget (I* = 10 (N / 1000)^0.5, `tests/sweeps/fakes.py`) instead of
training. Headless Chromium (Playwright on Debian's chromium) opens the experiment's page once
it is complete and reads what Plotly drew: the crossings with their error bars on log-log axes and
the fitted line whose legend holds the slope and its interval. A screenshot of the chart goes to
``DIVSWEEP_TEST_ARTIFACTS`` (or the test's tmp dir); docs/img/frontier-smoke.png is one.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from browser import Browser, chromium_path, open_browser
from loadgen.common import TOKEN
from loadgen.server import LoadServer

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(chromium_path() is None, reason="Debian package `chromium` is missing"),
]
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoadServer]:
    with LoadServer(
        tmp_path_factory.mktemp("frontier-page"), factory="frontier_job:app_from_env"
    ) as srv:
        yield srv


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with open_browser() as b:
        yield b


def _wait_complete(server: LoadServer, exp_id: str, timeout_s: float) -> dict[str, object]:
    deadline = time.monotonic() + timeout_s
    while True:
        exp = httpx.get(f"{server.url}/v1/experiments/{exp_id}", timeout=30).json()
        if exp["status"] in ("complete", "failed", "cancelled"):
            return dict(exp)
        assert time.monotonic() < deadline, (exp, server.writer_logs())
        time.sleep(1.0)


def test_the_frontier_chart_draws_intervals_and_the_fitted_slope(
    server: LoadServer, browser: Browser, tmp_path: Path
) -> None:
    r = httpx.post(
        f"{server.url}/v1/experiments", json={"preset": "smoke-frontier"}, headers=AUTH, timeout=30
    )
    assert r.status_code == 202, r.text
    exp_id = r.json()["id"]
    exp = _wait_complete(server, exp_id, timeout_s=480)
    assert exp["status"] == "complete", (exp, server.writer_logs())

    charts = httpx.get(f"{server.url}/v1/experiments/{exp_id}/charts", timeout=60).json()
    fr = charts["frontier"]
    assert [p["budget"] for p in fr["points"]] == [1000, 4000, 16000]
    assert fr["slope"]["low"] <= 0.5 <= fr["slope"]["high"], fr["slope"]

    url = f"{server.url}/experiments/{exp_id}"
    drawn = "document.getElementById('frontier').data?.length >= 2"
    shot = Path(os.environ.get("DIVSWEEP_TEST_ARTIFACTS", tmp_path)) / "frontier-smoke.png"
    shot.parent.mkdir(parents=True, exist_ok=True)
    section = browser.html_when(
        url, "#frontier-section", f"!el.hidden && {drawn}", screenshot=shot, element_only=True
    )
    assert "Phase boundary" in section and shot.stat().st_size > 10_000
    plot = browser.evaluate_when(
        url,
        drawn,
        """(() => { const el = document.getElementById('frontier');
             return { traces: el.data.map(t => ({ name: t.name, x: t.x, y: t.y,
                                                  plus: t.error_y?.array,
                                                  minus: t.error_y?.arrayminus })),
                      xtype: el.layout.xaxis.type, ytype: el.layout.yaxis.type,
                      xticks: el.layout.xaxis.tickvals,
                      title: el.layout.title.text,
                      svg: el.querySelectorAll('.errorbar').length,
                      text: document.getElementById('frontier-text').textContent }; })()""",
    )
    points, line = plot["traces"][0], plot["traces"][-1]
    assert (plot["xtype"], plot["ytype"]) == ("log", "log")
    assert plot["xticks"] == [1000, 4000, 16000]  # the budgets label the x axis
    # the crossings with their intervals as error bars, as the charts endpoint has them
    assert points["x"] == [p["budget"] for p in fr["points"]]
    assert points["y"] == pytest.approx([p["estimate"] for p in fr["points"]])
    assert points["plus"] == pytest.approx([p["high"] - p["estimate"] for p in fr["points"]])
    assert points["minus"] == pytest.approx([p["estimate"] - p["low"] for p in fr["points"]])
    assert plot["svg"] >= 3  # Plotly rendered an error bar per budget
    # the fitted power law, its slope and interval in the legend and the title
    s = fr["slope"]
    assert line["x"] == [1000, 16000] and line["y"] == pytest.approx(fr["line"]["y"])
    slope = f"slope {s['estimate']:.4g} [{s['low']:.4g}, {s['high']:.4g}]"
    assert line["name"] == f"fit: {slope}" and slope in plot["title"]
    assert "1000: " in plot["text"] and "trials" in plot["text"]
    cost = f"Trials: {fr['trials']} against {fr['grid_trials']} for a grid at the same step"
    assert cost in plot["text"]
