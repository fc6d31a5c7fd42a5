# Training: one job per run id, `fedrank run` on the run's config, with torch on the job's threads.
# Its log (train.log next to run.json) holds the attempt and one line per round (no progress bar:
# stderr is a file); the job prints the log's last line, the run's outcome, to the workflow's output.
# A job killed or pre-empted resumes from its last round checkpoint when retried. Bad input found
# at run time, or any error on the job's last attempt, is recorded as a failed run (exit 0), so
# the failure reaches the reports instead of being dropped.
import json
from pathlib import Path


wildcard_constraints:
    run=r"[^/]+",


rule train:
    output:
        record=f"{RESULTS}/{{run}}/run.json",
        metrics=f"{RESULTS}/{{run}}/metrics.parquet",
        diagnostics=f"{RESULTS}/{{run}}/diagnostics.parquet",
    log:
        f"{RESULTS}/{{run}}/train.log",
    conda:
        ENV
    threads: 1
    resources:
        attempt=lambda wildcards, attempt: f"{attempt}/{job_attempts(workflow)}",
    params:
        config=lambda wildcards: json.dumps(PLAN.config_of(wildcards.run), sort_keys=True),
        out=lambda wildcards, output: Path(output.record).parent,
    shell:
        "fedrank run --config-json {params.config:q} --set runtime.threads={threads:q} "
        "--out {params.out:q} --attempt {resources.attempt:q} 2> {log:q} && tail -n 1 {log:q}"
