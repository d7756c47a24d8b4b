"""Running a spec on Ray Tune; these modules import Ray (and the trial workers, torch).

- `sweeps.running.driver`: `run_experiment`, the sweep from start to end; `check_runnable`.
- `sweeps.running.trainable`: the function Tune runs per trial (or fused group).
- `sweeps.running.callback`: `StoreCallback` (Tune's events into the results store) and
  `CancelStopper`.
- `sweeps.running.threshold`, `sweeps.running.asha`: the threshold searcher, the recording ASHA.
- `sweeps.running.fusing`, `sweeps.running.packing`: fused groups, GPU shares.
- `sweeps.running.reuse`: adopting stored results of identical trials.
- `sweeps.running.trackers`: MLflow / W&B through Tune's logger callbacks.
- `sweeps.running.cluster`: what the cluster offers trials (the node types the autoscaler may
  add, read from its cluster config; GPU memory by Ray's accelerator type). It imports no Ray:
  the service reads it too.

Example: ``from sweeps.running.driver import run_experiment; run_experiment(spec)``.
"""
