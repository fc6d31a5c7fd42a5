# Tuning (studies with `tune:`): each (setting, method variant) pair's trials train like any run
# (rule train, on the tuning seeds); `select` scores them on validation data only and writes the
# selected configuration. It is a checkpoint: the pair's test runs, whose run ids depend on the
# selection, enter the DAG once it exists, so tune -> select -> test -> statistics is one
# `snakemake` invocation (locally, with --profile slurm and with packed jobs alike).
import json


wildcard_constraints:
    pair=r"[^/]+/[^/]+/[^/]+/[^/]+",


localrules:
    select,


checkpoint select:
    input:
        lambda wildcards: [PLAN.record(run) for trial in PLAN.pairs[wildcards.pair].trial_runs for run in trial],
    output:
        f"{REPORTS}/tuning/selections/{{pair}}.json",
    log:
        f"{REPORTS}/logs/tuning/{{pair}}.log",
    conda:
        ENV
    params:
        spec=lambda wildcards: json.dumps(PLAN.pairs[wildcards.pair].spec(RESULTS), sort_keys=True),
        stats=json.dumps(config["stats"], sort_keys=True),
    shell:
        "fedrank select --spec-json {params.spec:q} --stats-json {params.stats:q} --out {output:q} > {log:q} 2>&1"


rule tuning:
    input:
        selections=[PLAN.selection_file(key) for key in PLAN.pairs],
        records=lambda wildcards: study_records(wildcards),
    output:
        report(
            directory(f"{REPORTS}/tuning/summary"),
            patterns=["{file,.+[.](png|html)}"],
            caption="report/tuning.rst",
            category="Tuning",
            labels={"file": "{file}"},
        ),
    log:
        f"{REPORTS}/logs/tuning.log",
    conda:
        ENV
    params:
        config=json.dumps(config, sort_keys=True),
    shell:
        "fedrank tuning --config-json {params.config:q} --out {output:q} > {log:q} 2>&1"
