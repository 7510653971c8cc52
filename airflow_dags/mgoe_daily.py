"""Daily MGOE pipeline: ingest -> nodes -> features (spark-submit), a data-quality gate after each, then the
trainer. Drop this file (or a symlink) into Airflow's dags folder; configure it with the environment
variables below on the scheduler / DAG processor / workers (read when the DAG file is parsed, no metadata
DB access at parse time), and per run with the DAG params (the trigger form).

Deployment settings (environment variables, with defaults):

====================  ===========================================================================================
MGOE_HOME             where the job files live: a repo checkout or unpacked release on the Airflow workers
                      (default: the folder above this file), or an ``hdfs://`` / ``s3a://`` URI for cluster mode
MGOE_SPARK_CONN_ID    Airflow Spark connection (master, deploy mode, queue): ``spark_default``
MGOE_PY_FILES         ``--py-files`` zip from ``make package``: ``$MGOE_HOME/dist/mgoe-<version>.zip``
MGOE_ARCHIVES         ``--archives`` packed env, e.g. ``hdfs:///apps/mgoe/mgoe-env-0.1.0.tar.gz#environment``;
                      when set, Spark's Python is ``./environment/bin/python`` (default: unset, the cluster's)
MGOE_DRIVER_PYTHON    with MGOE_ARCHIVES and a client-mode connection: the driver's Python on the Airflow worker
                      (the archive is unpacked only in containers / pods); ignored in cluster mode
MGOE_SPARK_CONF       extra Spark conf as a JSON object, e.g. ``{"spark.executor.memory": "8g"}``
MGOE_TRAIN_PYTHON     Python (with torch) that runs the trainer on the worker: ``python3``; it imports the project
                      from MGOE_HOME or MGOE_PY_FILES, whichever is local (neither: install the mgoe package in it)
MGOE_REPORT_ROOT      local or mounted folder for the trainer's report and checkpoints, ``<root>/<ds>/``
                      (default: ``<output_root>/report/<ds>/``; set it when the output root is a remote URI)
MGOE_CONFIG           default of the ``config`` param (YAML config file; empty: built-in defaults)
MGOE_OUTPUT_ROOT      default of the ``output_root`` param (table root URI): ``mgoe_output``
MGOE_INPUT_PATH       raw log for ingest, may use ``{{ ds }}`` (e.g. ``s3a://logs/dt={{ ds }}/``); unset: the
                      config's ``input.path``
MGOE_RETRIES          retries of the Spark and trainer tasks: ``2`` (quality gates never retry)
MGOE_SCHEDULE         ``@daily``; MGOE_START_DATE ``2026-01-01``; MGOE_CATCHUP ``false``
====================  ===========================================================================================
"""

from __future__ import annotations

import configparser
import json
import os
import shlex
from datetime import timedelta
from pathlib import Path

import pendulum
from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG, Param
from airflow.sdk.exceptions import AirflowException

DAG_ID = "mgoe_daily"
STAGES = ("ingest", "nodes", "features")


def _env(name: str, default: str) -> str:
    value = os.environ.get(name, "").strip()
    return value or default


def _version(home: str) -> str:
    """The project version from ``$MGOE_HOME/setup.cfg`` (local homes only), else ``0.1.0``."""
    parser = configparser.ConfigParser()
    if parser.read(Path(home) / "setup.cfg") and parser.has_option("metadata", "version"):
        return parser.get("metadata", "version")
    return "0.1.0"


HOME = _env("MGOE_HOME", str(Path(__file__).resolve().parents[1])).rstrip("/")
CONN_ID = _env("MGOE_SPARK_CONN_ID", "spark_default")
PY_FILES = _env("MGOE_PY_FILES", f"{HOME}/dist/mgoe-{_version(HOME)}.zip")
ARCHIVES = _env("MGOE_ARCHIVES", "") or None
DRIVER_PYTHON = _env("MGOE_DRIVER_PYTHON", "") or None
TRAIN_PYTHON = _env("MGOE_TRAIN_PYTHON", "python3")
REPORT_ROOT = _env("MGOE_REPORT_ROOT", "").rstrip("/")
RETRIES = int(_env("MGOE_RETRIES", "2"))
SPARK_CONF: dict[str, str] = json.loads(_env("MGOE_SPARK_CONF", "{}"))
ENV_PYTHON = "./environment/bin/python"
if ARCHIVES:
    # The archive unpacks as ./environment in every YARN container / Kubernetes pod (the #environment alias).
    SPARK_CONF = {"spark.pyspark.python": ENV_PYTHON, **SPARK_CONF}

# Arguments every job takes (jobs/common.py). The stage runs for the DAG run's logical date.
COMMON_ARGS = ["--run-date", "{{ ds }}", "--config", "{{ params.config }}", "--output", "{{ params.output_root }}"]
# MGOE_INPUT_PATH may be templated, e.g. s3a://logs/dt={{ ds }}/; unset: the config's input.path.
INPUT_PATH = _env("MGOE_INPUT_PATH", "")
STAGE_ARGS = {"ingest": ["--input", INPUT_PATH] if INPUT_PATH else [], "nodes": [], "features": []}

REPORT_DOC = f"{REPORT_ROOT or '<output_root>/report'}/<ds>/"

DOC_MD = f"""
### MGOE daily pipeline

Builds the Macro Task Merging Graph and its feature tables for the run date `{{{{ ds }}}}`, checks them,
and trains MGOE on them.

| task | what | on failure |
|---|---|---|
| `ingest` | raw log -> `interactions`, vocabularies, `rejects` | retried ({RETRIES}x) |
| `check_ingest` | rows > 0, unique keys, known tasks, dense ids, reject fraction | stops the run |
| `nodes` | scores, node vectors, weights, k-means -> `assignments`, `centroids` | retried |
| `check_nodes` | unique keys, finite weights / vectors, macro ids in range, **no empty macro node** | stops the run |
| `features` | macro edges, recent neighbors, task lookup, samples, `training_examples` | retried |
| `check_features` | finite edges / lookups, per-task array lengths, train and test rows > 0 | stops the run |
| `train` | PyTorch trainer on `training_examples`; report, results and checkpoints in `{REPORT_DOC}` | retried |

Every stage writes its tables atomically for the run date (`<root>/<table>/run_date=YYYY-MM-DD/`), so a
retry or a manual re-run replaces exactly that date. The gates write their results to the
`quality_checks` table and exit non-zero when a check fails; they never retry (bad data does not heal).

Spark connection: `{CONN_ID}`; job files: `{HOME}/jobs/`; py-files: `{PY_FILES}`;
archives: `{ARCHIVES or "(none: the cluster's Python)"}`. Change them with the `MGOE_*` environment variables
(see the module docstring); change the config or the output root per run with the params (a path or URI of
letters, digits and `. _ / : @ + = % -`; anything else is refused when the run is triggered).
No catchup by default: backfill a date range with `airflow dags backfill {DAG_ID} -s START -e END`.
"""


DRIVER_PYTHON_KEY = "spark.pyspark.driver.python"


def driver_conf(
    conf: dict[str, str], deploy_mode: str | None, archives: str | None = ARCHIVES, driver: str | None = DRIVER_PYTHON
) -> dict[str, str]:
    """``conf`` with the driver's Python for ``deploy_mode`` (the connection's; ``None`` is client). Pure.

    With MGOE_ARCHIVES the executors run ``./environment/bin/python``; so does a cluster-mode driver (it runs
    in a container / pod that has the archive). A client-mode driver runs on the Airflow worker, where there
    is no ``./environment``: it gets MGOE_DRIVER_PYTHON, and without one the task fails here, in one line,
    rather than in spark-submit with "Cannot run program ./environment/bin/python". An explicit
    ``spark.pyspark.driver.python`` in MGOE_SPARK_CONF always wins."""
    if not archives or DRIVER_PYTHON_KEY in conf or deploy_mode == "cluster":
        return conf
    if not driver:
        raise AirflowException(
            "mgoe_daily: MGOE_ARCHIVES is set and the Spark connection's deploy mode is client, so the driver runs "
            "on this worker where ./environment does not exist; set MGOE_DRIVER_PYTHON to a Python with the "
            "project's dependencies here (e.g. the packed env unpacked on the worker), or use deploy-mode cluster"
        )
    return {**conf, DRIVER_PYTHON_KEY: driver}


class StageOperator(SparkSubmitOperator):
    """SparkSubmitOperator whose driver Python follows the connection's deploy mode (:func:`driver_conf`),
    which is known only when the task runs (the connection is not read at parse time)."""

    def execute(self, context):
        self.conf = driver_conf(dict(self.conf or {}), self._get_hook()._connection["deploy_mode"])
        self._hook = None  # rebuilt from the completed conf
        return super().execute(context)


def spark_task(task_id: str, job: str, args: list[str], retries: int) -> SparkSubmitOperator:
    return StageOperator(
        task_id=task_id,
        conn_id=CONN_ID,
        application=f"{HOME}/jobs/{job}.py",
        py_files=PY_FILES,
        archives=ARCHIVES,
        conf=dict(SPARK_CONF),
        name=f"mgoe-{task_id}-{{{{ ds }}}}",
        application_args=[*args, *COMMON_ARGS],
        retries=retries,
        # A retry submits the stage again (safe: each write replaces exactly its run date) rather than
        # reconnecting to a recorded job, which on YARN in cluster mode would need the ResourceManager's REST
        # address (yarn_track_via_rm_api); spark-submit waits for the application either way.
        durable=False,
    )


def train_pythonpath(home: str, py_files: str) -> dict[str, str]:
    """Where the trainer (plain Python on the Airflow worker) imports the project from: MGOE_HOME if it is a
    local folder, else the MGOE_PY_FILES zip if local, else nothing (the trainer's Python must have the mgoe
    package installed). Never a remote URI, which Python cannot import from. Pure."""
    for candidate in (home, py_files):
        if "://" not in candidate:
            return {"PYTHONPATH": candidate}
    return {}


# The trainer's command: run date, config, output root and report folder arrive as environment variables,
# quoted, so a param's value is one argument of the trainer and never shell code.
TRAIN_COMMAND = (
    f'exec {shlex.quote(TRAIN_PYTHON)} -m jobs.train --run-date "$MGOE_RUN_DATE" --config "$MGOE_RUN_CONFIG" '
    '--examples-root "$MGOE_RUN_OUTPUT" --output "$MGOE_RUN_OUTPUT" --report "$MGOE_RUN_REPORT"'
)
TRAIN_ENV = {
    "MGOE_RUN_DATE": "{{ ds }}",
    "MGOE_RUN_CONFIG": "{{ params.config }}",
    "MGOE_RUN_OUTPUT": "{{ params.output_root }}",
    # Report, results.json and the checkpoints (<report>/checkpoints), durable and per run date.
    "MGOE_RUN_REPORT": f"{REPORT_ROOT}/{{{{ ds }}}}" if REPORT_ROOT else "{{ params.output_root }}/report/{{ ds }}",
    **train_pythonpath(HOME, PY_FILES),
}

# A path or URI as one plain token: letters, digits and . _ / : @ + = % -, not starting with '-' (argparse
# would take it for an option). No whitespace, quotes, or shell and Jinja characters.
PATH_TOKEN = r"[A-Za-z0-9_./][A-Za-z0-9_./:@+=%-]*"
PATH_RULE = "letters, digits and . _ / : @ + = % - only, not starting with '-'"
PARAMS = {
    "config": Param(
        _env("MGOE_CONFIG", ""),
        type="string",
        pattern=f"^({PATH_TOKEN})?$",
        description=f"YAML config file the driver can open (empty: the defaults); {PATH_RULE}",
    ),
    "output_root": Param(
        _env("MGOE_OUTPUT_ROOT", "mgoe_output"),
        type="string",
        pattern=f"^{PATH_TOKEN}$",
        description=f"table root URI (local path, hdfs://, s3a://, gs://); {PATH_RULE}",
    ),
}


with DAG(
    dag_id=DAG_ID,
    description="MGOE: Spark feature pipeline with quality gates, then the trainer",
    schedule=_env("MGOE_SCHEDULE", "@daily"),
    start_date=pendulum.parse(_env("MGOE_START_DATE", "2026-01-01")),
    catchup=_env("MGOE_CATCHUP", "false").lower() in ("1", "true", "yes"),
    max_active_runs=1,  # vocabularies grow run after run: days must not race each other
    doc_md=DOC_MD,
    tags=["mgoe", "spark", "training"],
    params=PARAMS,
    default_args={
        "owner": "mgoe",
        "retries": RETRIES,
        "retry_delay": timedelta(minutes=5),
        "retry_exponential_backoff": True,
        "execution_timeout": timedelta(hours=int(_env("MGOE_TASK_TIMEOUT_HOURS", "6"))),
    },
) as dag:
    previous = None
    for stage in STAGES:
        run = spark_task(stage, stage, STAGE_ARGS[stage], RETRIES)
        gate = spark_task(f"check_{stage}", "quality", ["--gate", stage], retries=0)
        if previous is not None:
            previous >> run
        run >> gate
        previous = gate

    train = BashOperator(
        task_id="train",
        bash_command=TRAIN_COMMAND,
        cwd=HOME if "://" not in HOME else None,
        env=TRAIN_ENV,
        append_env=True,
    )
    previous >> train
