"""The shared Ray head fixture starts a real cluster that runs submitted jobs."""

import time

from ray.job_submission import JobStatus, JobSubmissionClient


def test_head_runs_a_submitted_job(ray_head) -> None:
    client = JobSubmissionClient(ray_head.dashboard_url)
    script = "import ray; ray.init(); print('cpus', ray.cluster_resources()['CPU'])"
    job = client.submit_job(entrypoint=f'python -c "{script}"')
    deadline = time.monotonic() + 120
    while not client.get_job_status(job).is_terminal():
        assert time.monotonic() < deadline, "job did not finish"
        time.sleep(0.5)
    assert client.get_job_status(job) == JobStatus.SUCCEEDED
    assert "cpus 2.0" in client.get_job_logs(job)
