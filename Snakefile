# fedrank workflow: `snakemake --cores all` runs the demo (configs/default.yaml);
# `snakemake --cores all --configfile configs/<other>.yaml` runs another grid.
from bench.workflow import plan_runs

configfile: "configs/default.yaml"

RUNS = plan_runs(config)
RESULTS = config.get("results", "results/runs")
REPORTS = config.get("reports", "reports")

include: "workflows/train.smk"
include: "workflows/report.smk"


rule all:
    input:
        f"{REPORTS}/results.md",
        f"{REPORTS}/convergence.png",
