# One federated run per job; the resolved run config travels on the command line.
import json


rule train:
    output:
        record=f"{RESULTS}/{{run}}/run.json",
        metrics=f"{RESULTS}/{{run}}/metrics.parquet",
        diagnostics=f"{RESULTS}/{{run}}/diagnostics.parquet",
    params:
        config=lambda wildcards: json.dumps(RUNS[wildcards.run], sort_keys=True),
        out=lambda wildcards: f"{RESULTS}/{wildcards.run}",
    threads: 1
    log:
        f"{RESULTS}/{{run}}/train.log",
    shell:
        "fedrank run --config-json {params.config:q} --out {params.out} --quiet 2> {log}"
