#!/usr/bin/env bash
# Run by Snakemake inside the new conda environment, from the workflow's working directory
# (the repository root): install this checkout of fedrank with its dependencies.
set -euo pipefail
python -m pip install --no-cache-dir -e .
