"""The Ray dashboard over plain HTTP: is it up, what does it say, which nodes are alive.

One home for the calls that do not need Ray's SDK: the service's job runner (`service.jobs`)
and the local head's start-up wait (`service.local_ray`) both use them, so "ready" means the
same in both. Every call carries the cluster's auth headers (Ray's token mode) and gives up
after a few seconds; a failure is an answer (False / None), never an exception::

    answers(url + "/api/version", headers)        # True once the dashboard serves
    get_json(url + "/api/v0/nodes?limit=10000", headers)["data"]
    live_nodes(url, headers)                      # [{"CPU": 2.0, "memory": ...}], or None
"""

from __future__ import annotations

import json
import logging
import urllib.request
from typing import Any

log = logging.getLogger(__name__)


def answers(url: str, headers: dict[str, str], timeout_s: float = 2.0) -> bool:
    """True when ``url`` answers 200 (the readiness probe of a dashboard route)."""
    req = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def get_json(url: str, headers: dict[str, str], timeout_s: float = 5.0) -> Any | None:
    """The JSON body at ``url``, or None (logged) when it cannot be read."""
    req = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as r:
            return json.load(r)
    except (OSError, ValueError) as e:
        log.warning("cannot read %s: %s", url, e)
        return None


def live_nodes(dashboard_url: str, headers: dict[str, str]) -> list[dict[str, float]] | None:
    """Each live node's total resources from the state API (``/api/v0/nodes``); None when it
    does not answer or lists no live node. A head that is still registering lists none for a
    while (10-15 s on a busy machine): that is "unknown", never "a cluster without CPUs"."""
    body: Any = get_json(f"{dashboard_url}/api/v0/nodes?limit=10000", headers)
    try:
        rows = list(body["data"]["result"]["result"])
    except (KeyError, TypeError):
        return None
    alive = [
        {k: float(v) for k, v in (row.get("resources_total") or {}).items()}
        for row in rows
        if row.get("state") == "ALIVE"
    ]
    return alive or None
