#!/usr/bin/env bash
# Run the whole test suite: lint, the main suite in .venv (set up first if needed), then the Airflow DAG tests
# in their own .venv-airflow (Airflow's dependency set must not share the project venv). Extra arguments go to
# the main pytest run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
start=$(date +%s)
.venv/bin/python -m pytest "$@"
echo "[test] main suite: $(( $(date +%s) - start ))s"
start=$(date +%s)
bash scripts/test_airflow.sh -q
echo "[test] airflow DAG suite: $(( $(date +%s) - start ))s"
