#!/usr/bin/env bash
# Run the Airflow DAG tests (tests/test_airflow_dag.py) in their own virtualenv, .venv-airflow: Airflow's
# dependency set is large and must not share the project venv. First run: ~1-2 minutes of pip install
# (about 250 MB); later runs reuse it. Needs Java 17+ (the DAG test submits a quality gate to local Spark).
# Extra arguments go to pytest; --setup-only only builds the venv.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${MGOE_AIRFLOW_VENV:-.venv-airflow}
# Pins: Airflow 3.3 and the Spark provider as tested; pyspark 4.2.0 because the provider's pyspark-client
# 4.2.0 overwrites files of any other pyspark; pyarrow / PyYAML are what the gate job imports.
REQS=(
  "apache-airflow==3.3.2"
  "apache-airflow-providers-apache-spark==6.3.4"
  "pyspark==4.2.0"
  "pandas>=2.2,<3"
  "pyarrow==26.0.1"
  "numpy==2.4.6"
  "PyYAML==6.0.3"
  "pytest==9.2.0"
  "pytest-timeout==2.4.0"
)
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
stamp="$VENV/.mgoe-airflow-installed"
if [ ! -f "$stamp" ] || [ "$0" -nt "$stamp" ]; then
  echo "[test_airflow] installing Airflow into $VENV (1-2 minutes the first time)"
  start=$(date +%s)
  # pip's own output goes to a log, shown only if the install fails
  if ! "$VENV/bin/python" -m pip install --disable-pip-version-check -q "${REQS[@]}" >"$VENV/setup.log" 2>&1; then
    echo "[test_airflow] pip install failed; its output ($VENV/setup.log):" >&2
    tail -40 "$VENV/setup.log" >&2
    exit 1
  fi
  touch "$stamp"
  echo "[test_airflow] installed in $(( $(date +%s) - start ))s"
fi
if [ "${1:-}" = "--setup-only" ]; then
  exit 0
fi
exec "$VENV/bin/python" -m pytest -p no:cacheprovider tests/test_airflow_dag.py "$@"
