# fedrank: federated-learning methods benchmarked as a Snakemake DAG.
#
#   snakemake --cores all                                        the demo (configs/default.yaml)
#   snakemake --cores all --configfile configs/paper.yaml        another config (replaces the demo)
#   snakemake --cores all --configfile configs/paper.yaml --profile slurm     on a SLURM cluster
#   snakemake --report reports/report.html                       the HTML report
#
# Stages: train (one job per run id) -> statistics (paper tables, ranking and figures over all
# studies) and report (tables and figures per study, dataset and setting). The config is checked and expanded here,
# before any job starts; `fedrank plan CONFIG` prints the same expansion.
import atexit
import os
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version, validate

from bench.config import read_yaml
from bench.errors import UserError
from bench.plan_cache import reused_plan
from bench.verified import reject_untrusted
from bench.workflow import (
    WORKFLOW_SCHEMA,
    check_config,
    closing_lines,
    concurrent_group_job,
    job_attempts,
)

min_version("9.0")
DEFAULT_CONFIG = "configs/default.yaml"

# A --configfile replaces the demo config instead of being merged into it.
if not workflow.overwrite_configfiles:

    configfile: DEFAULT_CONFIG


try:
    for path in workflow.configfiles:
        read_yaml(path)  # Snakemake's YAML reader keeps the last of a repeated key silently; ours refuses it
    check_config(config)  # one line naming the key for a bad config...
    validate(config, WORKFLOW_SCHEMA)  # ...then Snakemake's schema check, which fills in the defaults
    # Inside a packed SLURM job (a group job of training runs), before planning (the re-executed
    # Snakemake plans): run its runs at once, where the SLURM plugin would run them one by one,
    # and on a retry only those not finished before the kill (bench.workflow.concurrent_group_job
    # says why and how). A run's run.json is written last, atomically: then its outputs are all there.
    finished = lambda run: (Path(config["results"]) / run / "run.json").is_file()
    if (packed := concurrent_group_job(sys.argv, finished)) is not None:
        if not packed:
            print("every run of this packed job finished before it was stopped: nothing to do", flush=True)
            os._exit(0)
        os.execv(sys.executable, [sys.executable, "-m", "snakemake", *packed[1:]])
    # Every run resolved (or the plan stored for this config): bad values fail here, before any job starts.
    PLAN = reused_plan(config)
except UserError as exc:
    raise WorkflowError(str(exc)) from None  # the one-line message, without a traceback
RESULTS = config["results"]
REPORTS = config["reports"]
if workflow.is_main_process:
    # A finished run whose outputs do not verify (unreadable, another run's metrics, rounds missing)
    # is rerun: Snakemake alone would keep it, as its files are there (bench.verified says why).
    reject_untrusted(RESULTS, PLAN.run_ids_on_disk())
    if Path(REPORTS, "results.parquet").is_file():  # an older fedrank's single tidy file: the folder replaces it
        Path(REPORTS, "results.parquet").unlink()
# Every rule's software, for `--software-deployment-method conda`: this checkout, pip-installed.
ENV = "envs/fedrank.yaml"


report: "workflows/report/workflow.rst"


include: "workflows/train.smk"
include: "workflows/tested.smk"
include: "workflows/tune.smk"
include: "workflows/report.smk"


onsuccess:
    # At exit, after Snakemake's own last lines (the log file, the elapsed time): where to look next.
    atexit.register(print, *closing_lines(PLAN, workflow.configfiles, DEFAULT_CONFIG), sep="\n", file=sys.stderr)


rule all:
    default_target: True
    input:
        rules.manifest.output,
        rules.statistics.output,
        [f"{REPORTS}/{path}" for path in PLAN.groups],
        [rules.tuning.output] if PLAN.pairs else [],
