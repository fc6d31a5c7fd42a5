# Reporting: the study manifest and stats settings the statistics read, and per report group
# (study x dataset x setting of its swept keys) the tables and figures of `fedrank report`.
# Every file lands in the HTML report (`snakemake --report`), by study and dataset.
import json


wildcard_constraints:
    study="|".join(PLAN.studies),
    dataset=r"[^/]+",
    setting=r"[^/]+",


localrules:
    manifest,
    report,


rule manifest:
    output:
        studies=report(f"{REPORTS}/studies.csv", caption="report/manifest.rst", category="Study manifest"),
        stats=f"{REPORTS}/stats.yaml",
    params:
        config=lambda wildcards: json.dumps(config, sort_keys=True),
    conda:
        ENV
    log:
        f"{REPORTS}/logs/manifest.log",
    shell:
        "fedrank plan --config-json {params.config:q} --write-manifest {output.studies} "
        "--write-stats {output.stats} > {log} 2>&1"


rule report:
    input:
        lambda wildcards: PLAN.records(wildcards),
    output:
        report(
            directory(f"{REPORTS}/{{study}}/{{dataset}}/{{setting}}"),
            patterns=["{name}.png", "{name}.csv", "{name}.html"],
            caption="report/group.rst",
            category="{study}",
            subcategory="{dataset}",
            labels={"setting": "{setting}", "file": "{name}"},
        ),
    params:
        caption=lambda wildcards: PLAN.caption(wildcards),
    conda:
        ENV
    log:
        f"{REPORTS}/logs/{{study}}/{{dataset}}/{{setting}}.log",
    shell:
        "fedrank report --out {output:q} {input:q} > {log:q} 2>&1"
