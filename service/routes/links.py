"""URLs the API hands out: relative to the service root unless ``public_url`` is set."""

from __future__ import annotations

from service.registry import Experiment
from service.schemas import Links


def links_for(exp: Experiment, public_url: str | None, dashboard_url: str | None) -> Links:
    base = (public_url or "").rstrip("/")
    root = f"{base}/v1/experiments/{exp.id}"
    dash = None
    if dashboard_url:
        job = exp.ray_job_id or ""
        dash = f"{dashboard_url.rstrip('/')}/#/jobs/{job}" if job else dashboard_url
    return Links(
        status=root, results=f"{root}/results", events=f"{root}/events",
        summary=f"{root}/summary", plot=f"{root}/plot.png", page=f"{base}/experiments/{exp.id}",
        dashboard=dash,
    )
