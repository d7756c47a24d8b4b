"""Property-based run over the OpenAPI schema: no generated request gets a 5xx.

Schemathesis generates valid (positive) and invalid (negative) requests for every documented
operation, the submit body from the full ExperimentSpec schema. The app runs on the in-memory
fakes, so valid submissions go as far as a fake Ray job. Each case is sent with and without a
token. The number of examples is bounded so the run takes seconds.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from service_fakes import AUTH, Harness

EXAMPLES = 50


MODES = [schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE]


# "all" spreads the examples over every operation; "submit" spends them on the submission body,
# where most of the input surface is.
@pytest.mark.parametrize("target", ["all", "submit"])
@pytest.mark.parametrize("mode", MODES, ids=str)
def test_no_server_errors(tmp_path: Path, mode: schemathesis.GenerationMode, target: str) -> None:
    h = Harness(tmp_path, max_trials=16, max_examples=100_000, max_concurrent=10_000)
    schema = schemathesis.openapi.from_asgi("/openapi.json", h.app)
    seen: set[str] = set()
    source = schema if target == "all" else schema["/v1/experiments"]["POST"]

    @given(case=source.as_strategy(generation_mode=mode))
    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    def check(case: schemathesis.Case) -> None:
        seen.add(f"{case.method} {case.path}")
        for headers in (AUTH, {}):
            response = case.call(headers=headers)
            assert response.status_code < 500, (case.method, case.formatted_path,
                                                response.text[:500])
            if response.status_code >= 400:
                body = response.json()
                assert {"error", "detail", "fields"} <= body.keys(), body

    check()
    assert len(seen) >= (5 if target == "all" else 1), seen
