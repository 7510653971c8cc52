"""The Airflow DAG (airflow_dags/mgoe_daily.py): it parses, its tasks are in order, its templated spark-submit
commands carry the run date, and a quality-gate task runs for real with ``airflow tasks test`` on local Spark.

Needs apache-airflow, which the project's default test venv does not have: these tests skip there.
``bash scripts/test_airflow.sh`` builds ``.venv-airflow`` (Airflow 3.3 + the Spark provider + pyspark 4.2.0)
and runs them.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DAG_FOLDER = REPO / "airflow_dags"
RUN_DATE = "2026-11-23"
CHAIN = ["ingest", "check_ingest", "nodes", "check_nodes", "features", "check_features", "train"]

HAVE_AIRFLOW = importlib.util.find_spec("airflow") is not None
if HAVE_AIRFLOW:
    # Airflow reads its configuration on import: keep it away from ~/airflow and the example DAGs.
    os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="mgoe-airflow-home-"))
    os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(DAG_FOLDER))

pytestmark = pytest.mark.skipif(
    not HAVE_AIRFLOW,
    reason="apache-airflow is not installed in this Python; run `bash scripts/test_airflow.sh` (own .venv-airflow)",
)

MGOE_ENV = ("MGOE_HOME", "MGOE_SPARK_CONN_ID", "MGOE_PY_FILES", "MGOE_ARCHIVES", "MGOE_SPARK_CONF", "MGOE_RETRIES")
MGOE_ENV += ("MGOE_DRIVER_PYTHON", "MGOE_TRAIN_PYTHON", "MGOE_REPORT_ROOT")


def load_dag(monkeypatch, **env: str):
    """Parse the DAG folder with the given MGOE_* environment (unset ones take their defaults)."""
    from airflow.dag_processing.dagbag import DagBag

    for name in (*MGOE_ENV, "MGOE_INPUT_PATH", "MGOE_CONFIG", "MGOE_OUTPUT_ROOT"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    bag = DagBag(dag_folder=str(DAG_FOLDER))
    assert bag.import_errors == {}
    return bag.dags["mgoe_daily"]


def render(task, **params):
    context = {"ds": RUN_DATE, "params": {"config": "", "output_root": "mgoe_output", **params}}
    task.render_template_fields(context)
    return task


def test_dagbag_has_no_import_errors(monkeypatch):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAG_FOLDER))
    assert bag.import_errors == {}
    assert list(bag.dags) == ["mgoe_daily"]
    dag = bag.dags["mgoe_daily"]
    assert dag.catchup is False and dag.max_active_runs == 1
    assert "quality_checks" in dag.doc_md and "check_nodes" in dag.doc_md
    monkeypatch.setenv("MGOE_CATCHUP", "true")
    assert load_dag(monkeypatch).catchup is True


def test_task_order(monkeypatch):
    dag = load_dag(monkeypatch)
    assert sorted(dag.task_ids) == sorted(CHAIN)
    for upstream, downstream in zip(CHAIN, CHAIN[1:], strict=False):
        assert dag.get_task(upstream).downstream_task_ids == {downstream}
    assert dag.get_task("train").downstream_task_ids == set()
    assert dag.get_task("ingest").upstream_task_ids == set()


def test_retries_and_connection_are_configurable(monkeypatch):
    dag = load_dag(monkeypatch)
    assert [dag.get_task(t).retries for t in CHAIN] == [2, 0, 2, 0, 2, 0, 2]  # gates never retry
    assert {dag.get_task(t)._conn_id for t in CHAIN[:-1]} == {"spark_default"}
    dag = load_dag(monkeypatch, MGOE_RETRIES="5", MGOE_SPARK_CONN_ID="spark_yarn")
    assert dag.get_task("nodes").retries == 5 and dag.get_task("check_nodes").retries == 0
    assert {dag.get_task(t)._conn_id for t in CHAIN[:-1]} == {"spark_yarn"}


def test_rendered_spark_submit_commands_carry_the_run_date(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_SPARK_YARN", json.dumps({"conn_type": "spark", "host": "yarn"}))
    dag = load_dag(
        monkeypatch,
        MGOE_HOME="/opt/mgoe",
        MGOE_SPARK_CONN_ID="spark_yarn",
        MGOE_PY_FILES="hdfs:///apps/mgoe/mgoe-0.1.0.zip",
        MGOE_ARCHIVES="hdfs:///apps/mgoe/mgoe-env-0.1.0.tar.gz#environment",
        MGOE_INPUT_PATH="s3a://logs/dt={{ ds }}/",
        MGOE_SPARK_CONF='{"spark.executor.memory": "8g"}',
    )
    ingest = render(dag.get_task("ingest"), config="/etc/mgoe/taobao.yaml", output_root="s3a://bucket/mgoe")
    cmd = ingest._get_hook()._build_spark_submit_command(ingest.application)
    i = cmd.index("/opt/mgoe/jobs/ingest.py")
    assert cmd[:i] == [
        "spark-submit",
        "--master",
        "yarn",
        "--conf",
        "spark.pyspark.python=./environment/bin/python",
        "--conf",
        "spark.executor.memory=8g",
        "--py-files",
        "hdfs:///apps/mgoe/mgoe-0.1.0.zip",
        "--archives",
        "hdfs:///apps/mgoe/mgoe-env-0.1.0.tar.gz#environment",
        "--name",
        f"mgoe-ingest-{RUN_DATE}",
    ]
    assert cmd[i + 1 :] == [
        "--input",
        f"s3a://logs/dt={RUN_DATE}/",
        "--run-date",
        RUN_DATE,
        "--config",
        "/etc/mgoe/taobao.yaml",
        "--output",
        "s3a://bucket/mgoe",
    ]
    gate = render(dag.get_task("check_features"))
    assert gate.application == "/opt/mgoe/jobs/quality.py"
    assert gate.application_args == [
        "--gate",
        "features",
        "--run-date",
        RUN_DATE,
        "--config",
        "",
        "--output",
        "mgoe_output",
    ]
    train = render(dag.get_task("train"), output_root="s3a://bucket/mgoe")
    assert "-m jobs.train --run-date" in train.bash_command
    assert train.env["MGOE_RUN_DATE"] == RUN_DATE and train.env["MGOE_RUN_OUTPUT"] == "s3a://bucket/mgoe"


STUB_TRAINER = """#!{python}
# Stands in for the trainer's Python: records its arguments, PYTHONPATH and working directory.
import json, os, sys
env = {{"argv": sys.argv[1:], "pythonpath": os.environ.get("PYTHONPATH"), "cwd": os.getcwd()}}
with open({out!r}, "w") as fh:
    json.dump(env, fh)
"""


def run_train(monkeypatch, tmp_path: Path, params: dict, **env: str) -> dict:
    """Parse the DAG with ``env`` and MGOE_TRAIN_PYTHON a stub, render the train task with ``params`` (as a
    trigger that skipped validation would) and run it through BashOperator.execute: what the trainer got."""
    out = tmp_path / "trainer-call.json"
    stub = tmp_path / "stub-python"
    stub.write_text(STUB_TRAINER.format(python=sys.executable, out=str(out)))
    stub.chmod(0o755)
    dag = load_dag(monkeypatch, MGOE_TRAIN_PYTHON=str(stub), **env)
    task = render(dag.get_task("train"), **params)
    task.execute({})
    return json.loads(out.read_text())


HOSTILE = ["x'; touch {p}; '", '"; touch {p}; "', "$(touch {p})", "`touch {p}`", "a\ntouch {p}"]


@pytest.mark.parametrize("param", ["config", "output_root"])
def test_a_hostile_param_is_refused_and_never_reaches_a_shell(monkeypatch, tmp_path, param):
    """Issue 26 item 1: whoever may trigger the DAG sets the params; they must not run commands on the worker."""
    from airflow.sdk.exceptions import ParamValidationError

    pwned = tmp_path / "pwned"
    dag = load_dag(monkeypatch)
    for template in HOSTILE:
        value = template.format(p=pwned)
        params = copy.deepcopy(dag.params)
        with pytest.raises(ParamValidationError, match=f"param {param}: .* does not match"):
            params[param] = value  # what a trigger with conf={param: value} runs into
            params.validate()
        # Past validation too (e.g. an edited run conf), the value reaches the trainer as one argument.
        got = run_train(monkeypatch, tmp_path, {param: value})
        assert not pwned.exists(), f"{value!r} ran a command"
        flag = "--config" if param == "config" else "--output"
        assert got["argv"][got["argv"].index(flag) + 1] == value
    for fine in ("/etc/mgoe/taobao.yaml", "s3a://bucket/mgoe/dt=2026-11-23", "hdfs:///warehouse/mgoe", "mgoe_output"):
        params = copy.deepcopy(dag.params)
        params[param] = fine
        params.validate()


def _write_ingest_tables(root: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    sys.path.insert(0, str(REPO))
    from schemas import INTERACTIONS, VOCAB_ITEMS, VOCAB_USERS

    tables = [
        (
            INTERACTIONS,
            {"user_id": [1, 2], "item_id": [1, 2], "task": ["click", "buy"], "ts": [1, 2], "category": [None] * 2},
        ),
        (VOCAB_USERS, {"raw_id": ["a", "b"], "id": [1, 2], "first_run_date": [RUN_DATE] * 2}),
        (VOCAB_ITEMS, {"raw_id": ["x", "y"], "id": [1, 2], "first_run_date": [RUN_DATE] * 2}),
    ]
    for schema, columns in tables:
        part = root / schema.name / f"run_date={RUN_DATE}"
        part.mkdir(parents=True)
        pq.write_table(pa.table(columns, schema=schema.arrow(with_partition=False)), part / "part-0.parquet")


def test_quality_gate_task_runs_with_airflow_tasks_test(tmp_path):
    """`airflow tasks test mgoe_daily check_ingest <date>`: the real operator, spark-submit, local Spark."""
    import pyarrow.parquet as pq

    spec = importlib.util.spec_from_file_location("mgoe_package", REPO / "scripts" / "package.py")
    package = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(package)
    zip_path = package.build_zip(tmp_path / "dist")
    root = tmp_path / "out"
    _write_ingest_tables(root)
    bindir = Path(sys.executable).parent
    python = sys.executable  # has pyspark 4.2.0, pyarrow and PyYAML: what the job imports besides the zip
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MGOE_", "AIRFLOW", "PYTHONPATH", "SPARK_HOME"))}
    env.update(
        AIRFLOW_HOME=str(tmp_path / "airflow"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__DAGS_FOLDER=str(DAG_FOLDER),
        AIRFLOW_CONN_SPARK_DEFAULT=json.dumps({"conn_type": "spark", "host": "local[2]"}),
        MGOE_PY_FILES=str(zip_path),
        MGOE_OUTPUT_ROOT=str(root),
        MGOE_SPARK_CONF=json.dumps(
            {
                "spark.pyspark.python": python,
                "spark.pyspark.driver.python": python,
                "spark.ui.enabled": "false",
                "spark.sql.shuffle.partitions": "2",
            }
        ),
        PATH=f"{bindir}{os.pathsep}{env.get('PATH', '')}",  # spark-submit of this venv
    )
    airflow = str(bindir / "airflow")
    migrate = subprocess.run([airflow, "db", "migrate"], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert migrate.returncode == 0, migrate.stderr[-3000:]
    done = subprocess.run(
        [airflow, "tasks", "test", "mgoe_daily", "check_ingest", RUN_DATE],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=900,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert "[quality:ingest] ok   interactions.row_count = 2" in output
    checks = pq.read_table(root / "quality_checks" / f"run_date={RUN_DATE}").to_pylist()
    assert len(checks) >= 10 and all(c["passed"] and c["gate"] == "ingest" for c in checks)


def test_train_imports_from_a_local_path_and_keeps_its_report(monkeypatch, tmp_path):
    """Issue 26 item 8: the trainer (plain Python on the worker) never gets a URI on PYTHONPATH, and its report
    and checkpoints go to a durable per-date folder (default: under the output root), not the worker's /tmp."""
    got = run_train(monkeypatch, tmp_path, {"output_root": str(tmp_path / "out")})
    assert got["pythonpath"] == str(REPO) and got["cwd"] == str(REPO)  # the default home: this checkout
    assert got["argv"][got["argv"].index("--report") + 1] == f"{tmp_path}/out/report/{RUN_DATE}"
    cluster = {"MGOE_HOME": "hdfs:///apps/mgoe", "MGOE_REPORT_ROOT": "/mnt/mgoe/reports/"}
    got = run_train(monkeypatch, tmp_path, {"output_root": "s3a://bucket/mgoe"}, **cluster)
    assert got["pythonpath"] is None or "://" not in got["pythonpath"]  # the default zip is remote too
    assert got["argv"][got["argv"].index("--report") + 1] == f"/mnt/mgoe/reports/{RUN_DATE}"
    zip_path = str(tmp_path / "mgoe-0.1.0.zip")
    got = run_train(monkeypatch, tmp_path, {}, MGOE_PY_FILES=zip_path, **cluster)
    assert got["pythonpath"] == zip_path


def _submitted(monkeypatch, task) -> list[str] | None:
    """Run a stage task's execute with spark-submit replaced by a recorder: the command it would run."""
    from airflow.providers.apache.spark.hooks.spark_submit import SparkSubmitHook

    seen: list[list[str]] = []
    monkeypatch.setattr(SparkSubmitHook, "submit", lambda hook, app: seen.append(hook._build_spark_submit_command(app)))
    task.execute({})
    return seen[0] if seen else None


def test_the_driver_python_follows_the_deploy_mode_with_archives(monkeypatch):
    """Issue 26 item 8: with MGOE_ARCHIVES a client-mode driver (on the Airflow worker, no ./environment there)
    runs MGOE_DRIVER_PYTHON; a cluster-mode one the archive's Python; client mode without one fails first."""
    from airflow.sdk.exceptions import AirflowException

    for mode in ("client", "cluster"):
        conn = {"conn_type": "spark", "host": "yarn", "extra": {"deploy-mode": mode}}
        monkeypatch.setenv(f"AIRFLOW_CONN_SPARK_{mode.upper()}", json.dumps(conn))
    archives = {"MGOE_ARCHIVES": "hdfs:///apps/mgoe/mgoe-env-0.1.0.tar.gz#environment"}
    driver = {"MGOE_DRIVER_PYTHON": "/opt/mgoe-env/bin/python"}

    dag = load_dag(monkeypatch, MGOE_SPARK_CONN_ID="spark_client", **archives, **driver)
    cmd = _submitted(monkeypatch, render(dag.get_task("nodes")))
    assert "spark.pyspark.driver.python=/opt/mgoe-env/bin/python" in cmd
    assert "spark.pyspark.python=./environment/bin/python" in cmd and "--deploy-mode" in cmd

    dag = load_dag(monkeypatch, MGOE_SPARK_CONN_ID="spark_cluster", **archives, **driver)
    cmd = _submitted(monkeypatch, render(dag.get_task("nodes")))
    assert not any(c.startswith("spark.pyspark.driver.python=") for c in cmd)  # falls back to ./environment
    assert "spark.pyspark.python=./environment/bin/python" in cmd

    dag = load_dag(monkeypatch, MGOE_SPARK_CONN_ID="spark_client", **archives)
    with pytest.raises(AirflowException, match="set MGOE_DRIVER_PYTHON"):
        _submitted(monkeypatch, render(dag.get_task("nodes")))
