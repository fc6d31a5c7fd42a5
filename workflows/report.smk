# Reporting: the study manifest and stats settings the statistics read; the all-studies statistics
# (paper tables, ranking, figures under `reports/tables`, `reports/figures`, `reports/stats`); and
# per report group (study x dataset x setting of its swept keys) its own tables and figures.
# Every table and figure lands in the HTML report (`snakemake --report`), by study and dataset,
# with the caption `fedrank report` computed for it (report.json).
import json
from pathlib import Path

from bench.stats.report_captions import StoredCaptions


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
        configs=workflow.configfiles,
        # Tuned studies: the manifest lists their test runs, read from the selections.
        selections=[PLAN.selection_file(key) for key in PLAN.pairs],
    output:
        studies=report(f"{REPORTS}/studies.csv", caption="report/manifest.rst", category="Study manifest"),
        stats=f"{REPORTS}/stats.yaml",
    log:
        f"{REPORTS}/logs/manifest.log",
    conda:
        ENV
    params:
        config=lambda wildcards: json.dumps(config, sort_keys=True),
    shell:
        "fedrank plan --config-json {params.config:q} --write-manifest {output.studies:q} "
        "--write-stats {output.stats:q} > {log:q} 2>&1"


rule statistics:
    input:
        records=study_records,
        studies=rules.manifest.output.studies,
        stats=rules.manifest.output.stats,
    output:
        tables=report(
            directory(f"{REPORTS}/tables"),
            patterns=["{name}.html"],  # a browser shows a CSV as nothing; the CSV, Markdown and LaTeX lie beside it
            caption="report/table.rst",
            category="All studies",
            subcategory="Tables",
            labels={"table": "{name}"},
        ),
        figures=report(
            directory(f"{REPORTS}/figures"),
            patterns=["{name}.png"],  # {name} spans sub-folders: figures/cd_diagram.png and figures/convergence/*.png
            caption="report/figure.rst",
            category="All studies",
            subcategory="Figures",
            labels={"figure": "{name}"},
        ),
        stats=directory(f"{REPORTS}/stats"),
        tidy=f"{REPORTS}/results.parquet/_manifest.json",  # the folder's files are kept: a report rewrites only those of changed runs
        summary=f"{REPORTS}/results.csv",
        overview=report(
            f"{REPORTS}/convergence.png",
            caption="report/convergence.rst",
            category="All studies",
            subcategory="Figures",
            labels={"figure": "convergence (front page)"},
        ),
        front=f"{REPORTS}/results.md",
        front_html=report(  # also the HTML report's first page: workflows/report/workflow.rst embeds it
            f"{REPORTS}/front.html",
            caption="report/results.rst",
            category="All studies",
            subcategory="Tables",
            labels={"table": "results (front page)"},
        ),
        record=f"{REPORTS}/report.json",
    log:
        f"{REPORTS}/logs/statistics.log",
    conda:
        ENV
    params:
        out=lambda wildcards, output: Path(output.record).parent,
        # Read when the HTML report is made (a parameter derived from the output: no rerun trigger).
        captions=lambda wildcards, output: StoredCaptions(output.record),
    shell:
        "fedrank report --studies {input.studies:q} --stats-config {input.stats:q} "
        "--out {params.out:q} {input.records:q} > {log:q} 2>&1"


rule report:
    input:
        records=group_records,
        stats=rules.manifest.output.stats,
    output:
        report(
            directory(f"{REPORTS}/{{study}}/{{dataset}}/{{setting}}"),
            patterns=["{file,.+[.](png|html)}"],  # every figure and table, in sub-folders too
            caption="report/group.rst",
            category="{study}",
            subcategory="{dataset}",
            labels={"setting": "{setting}", "file": "{file}"},
        ),
    log:
        f"{REPORTS}/logs/{{study}}/{{dataset}}/{{setting}}.log",
    conda:
        ENV
    params:
        captions=lambda wildcards, output: StoredCaptions(Path(output[0]) / "report.json"),
    shell:
        "fedrank report --stats-config {input.stats:q} --out {output:q} {input.records:q} > {log:q} 2>&1"
