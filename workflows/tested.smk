# The test runs of tuned pairs: their run ids exist once the `select` checkpoint (tune.smk) has
# written the pair's selection, so the rules that read them (statistics, reports, tuning) get
# their inputs from these functions, which wait for the checkpoint and add the runs to the plan.
from bench.tuning import read_selection


def add_tested_runs(keys):
    """Add the test runs of tuned pairs `keys` to the plan (once their selection exists)."""
    for key in keys:
        PLAN.add_tested(key, read_selection(checkpoints.select.get(pair=key).output[0]))


def study_records(wildcards):
    """Every study's run.json files, tuned test runs included: what the statistics read."""
    add_tested_runs(PLAN.pairs)
    return PLAN.all_records()


def group_records(wildcards):
    """A report group's run.json files, its tuned test runs included."""
    add_tested_runs(PLAN.group(wildcards).pairs)
    return PLAN.records(wildcards)
