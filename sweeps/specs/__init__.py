"""What a study is, before anything runs: no Ray here, and no torch of its own.

- `sweeps.specs.spec`: `ExperimentSpec` and its sections (axes, search, scheduler, resources),
  validated once; `load_spec`, `spec_from_dict`.
- `sweeps.specs.expand`: from a spec's `TrialBase` and axes to its `TrialPlan` s (field paths,
  the budget coupling, seeds, trial keys).
- `sweeps.specs.bisection`: the arithmetic of a threshold search's probes.
- `sweeps.specs.lifecycle`: the experiment and trial states (StrEnums).
- `sweeps.specs.presets`: the paper's studies as spec files (``sweeps/presets/*.yaml``).
- `sweeps.specs.limits`, `sweeps.specs.model_size`: what a trial can cost (parameters, memory),
  for the service's quotas and the cost plan.
- `sweeps.specs.tracking`: the spec's ``tracking`` section (MLflow / W&B), its install check.

Example: ``from sweeps.specs.presets import load_preset; load_preset("smoke").n_trials``.
"""
