"""Reading results back: tables, charts, plots, verdicts, the results document, cost plans.

No Ray. `sweeps.reporting.tables` (results, summaries, threshold estimates),
`sweeps.reporting.charts` (what the results page draws), `sweeps.reporting.plot` (the phase
diagram as PNG), `sweeps.reporting.verdicts` and `sweeps.reporting.studies` (does a table show
the paper's effect), `sweeps.reporting.results_doc` (docs/RESULTS.md), `sweeps.reporting.plan`
(what a sweep costs before it runs).

Example: ``from sweeps.reporting.tables import summary; summary(exp_id, store_uri=uri)``.
"""
