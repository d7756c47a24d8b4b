"""``divsweep reproduce --check``: is docs/RESULTS.md current for the checked-out code? Judged
on a hand-made index (no service, no Ray): a section is current when its experiment completed
with real settings, at this checkout's code version of data/ and trainer/, from exactly the spec
its preset resolves to now."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from service.cli import app
from service.reproduce import check, prepare_study
from sweeps.codeversion import code_version
from sweeps.reporting.results_doc import ResultsIndex, StudyRecord, index_path
from sweeps.reporting.studies import STUDIES


def current_index(out: Path, seed_offset: int = 3) -> ResultsIndex:
    """An index whose every study ran, complete, at this code and with its preset's spec."""
    index = ResultsIndex()
    for name, study in STUDIES.items():
        spec = prepare_study(study, smoke=False, seed_offset=seed_offset)[1].spec
        index.studies[name] = StudyRecord(
            name,
            "complete",
            f"x{name}",
            spec=spec.model_dump(mode="json"),
            seed_offset=seed_offset,
            code_version=code_version(),
        )
    index.save(index_path(out))
    return index


def run_check(out: Path) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["reproduce", "--check", "--out", str(out)])
    return result.exit_code, result.output


def test_a_document_from_this_code_and_these_presets_is_current(tmp_path: Path) -> None:
    out = tmp_path / "RESULTS.md"
    current_index(out)
    assert check(out) == []
    code, output = run_check(out)
    assert code == 0 and output.strip().endswith("current for this checkout"), output


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (lambda r: setattr(r, "code_version", "0" * 64), "ran at code version 000000000000"),
        (lambda r: setattr(r, "code_version", None), "ran at code version unknown (an older"),
        (lambda r: setattr(r, "smoke", True), "ran with smoke settings"),
        (lambda r: setattr(r, "status", "failed"), "its experiment is failed"),
        (lambda r: r.spec["data"].update(alphabet="abc"), "its preset changed since it ran"),
        (lambda r: setattr(r, "seed_offset", 0), "its preset changed since it ran"),
    ],
)
def test_each_kind_of_staleness_is_named(tmp_path: Path, change, says: str) -> None:
    out = tmp_path / "RESULTS.md"
    index = current_index(out)
    change(index.studies["noops-mini"])
    index.save(index_path(out))
    assert [line.split(":")[0] for line in check(out)] == ["noops-mini"]
    code, output = run_check(out)
    assert code == 1 and f"stale: noops-mini: {says}" in output, output


def test_where_a_study_runs_and_fields_added_unset_leave_it_current(tmp_path: Path) -> None:
    out = tmp_path / "RESULTS.md"
    index = current_index(out)
    rec = index.studies["fig2a-mini"].spec
    rec["resources"] = {**rec["resources"], "gpu_memory_gb": 80.0}  # read from Ray now
    del rec["retries"]
    rec["train"] = {k: v for k, v in rec["train"].items() if v is not None}  # older schema
    index.save(index_path(out))
    assert check(out) == []
    index.studies["fig2a-mini"].spec["train"]["lr"] = 0.5
    index.save(index_path(out))
    assert check(out) == ["fig2a-mini: its preset changed since it ran (the recorded spec differs)"]


def test_a_study_never_run_is_stale(tmp_path: Path) -> None:
    out = tmp_path / "RESULTS.md"
    index = current_index(out)
    del index.studies["semantic-mini"]
    index.save(index_path(out))
    assert check(out) == ["semantic-mini: not run"]


class _NoResults:
    """A `ResultsSource` that has lost every experiment (the sections still render)."""

    def results_table(self, experiment_id: str):  # type: ignore[no-untyped-def]
        raise KeyError(experiment_id)

    def status(self, experiment_id: str) -> str | None:
        return "complete"


def test_the_document_marks_each_section_that_is_not_current(tmp_path: Path) -> None:
    from service.reproduce import reproduce

    out = tmp_path / "RESULTS.md"
    index = current_index(out)
    index.studies["noops-mini"].code_version = "0" * 64
    index.save(index_path(out))
    reproduce(None, [], False, out, lambda _: None, render_only=True, source=_NoResults())  # type: ignore[arg-type]
    sections = {s.split('"', 1)[0]: s for s in out.read_text().split('<a id="')[1:]}
    marked = [name for name, s in sections.items() if "**Not current:**" in s]
    assert marked == ["noops-mini"], marked
    assert "ran at code version 000000000000" in sections["noops-mini"]
    rows = [r for r in out.read_text().splitlines() if r.startswith("| [")]
    assert [r.split("]")[0][3:] for r in rows if r.endswith("| not current |")] == ["noops-mini"]
