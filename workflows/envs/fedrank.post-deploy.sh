#!/usr/bin/env bash
# Run by Snakemake inside the new conda environment, from the workflow's working directory
# (the repository root): add this checkout of fedrank. Its dependencies are already pinned in
# fedrank.yaml (from requirements.lock), so nothing is resolved or upgraded here.
set -euo pipefail
python -m pip install --no-deps --no-build-isolation -e .
