# Reporting: the study manifest and stats settings the statistics read; the all-studies statistics
# (paper tables, ranking, figures under `reports/tables`, `reports/figures`, `reports/stats`); and
# per report group (study x dataset x setting of its swept keys) its own tables and figures.
# Every file lands in the HTML report (`snakemake --report`), by study and dataset.
import json
from pathlib import Path


wildcard_constraints:
    study="|".join(PLAN.studies),
    dataset=r"[^/]+",
    setting=r"[^/]+",


localrules:
    manifest,
    statistics,
    report,


rule manifest:
    input:
        # An edited config file reruns the statistics also under `--rerun-triggers mtime input`
        # (the SLURM profile), which ignores the changed params.
        workflow.configfiles,
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


rule statistics:
    input:
        records=PLAN.all_records(),
        studies=rules.manifest.output.studies,
        stats=rules.manifest.output.stats,
    output:
        tables=report(
            directory(f"{REPORTS}/tables"),
            patterns=["{name}.csv"],
            caption="report/tables.rst",
            category="All studies",
            subcategory="Tables",
            labels={"table": "{name}"},
        ),
        figures=report(
            directory(f"{REPORTS}/figures"),
            patterns=["{kind}/{name}.png"],
            caption="report/figures.rst",
            category="All studies",
            subcategory="Figures",
            labels={"kind": "{kind}", "figure": "{name}"},
        ),
        stats=directory(f"{REPORTS}/stats"),
        tidy=f"{REPORTS}/results.parquet",
        summary=report(f"{REPORTS}/results.csv", caption="report/tables.rst", category="All studies", subcategory="Tables", labels={"table": "results"}),
        front=f"{REPORTS}/results.md",
        record=f"{REPORTS}/report.json",
    params:
        out=lambda wildcards, output: Path(output.record).parent,
        protocols=PLAN.protocols(),
    conda:
        ENV
    log:
        f"{REPORTS}/logs/statistics.log",
    shell:
        "fedrank report --quiet --studies {input.studies:q} --stats-config {input.stats:q} "
        "--out {params.out:q} {input.records:q} > {log:q} 2>&1"


rule report:
    input:
        records=lambda wildcards: PLAN.records(wildcards),
        stats=rules.manifest.output.stats,
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
        "fedrank report --quiet --stats-config {input.stats:q} --out {output:q} {input.records:q} > {log:q} 2>&1"
