"""The build on a real Spark standalone cluster: master and two workers as separate JVMs on 127.0.0.1
(``scripts/local_cluster.sh``), every application submitted with ``spark-submit --py-files <zip> --archives
<packed env>#env`` as a user would, executors in their own JVMs that the tests kill by pid.

- the build of two run dates submitted at the same time into one root (one executor each) equals the
  ``local[2]`` build of the same input: integer and string columns identical, floats within 1e-6 relative;
- an executor JVM killed mid-``nodes`` and again mid-``features``: the run completes through Spark's task
  retry and its tables equal the unfaulted ones;
- the driver killed mid-write (ingest's ``interactions``): the previous version stays readable, the leftover
  hidden staging directory is removed by the next run, which completes.

Cost (2 cores): one cluster start (~20 s), the packed env (cached across sessions in .pytest_cache, ~15 s
to build), the in-process local[2] reference build, and four cluster applications. Times are printed
(``pytest -m cluster -s``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from schemas import REGISTRY, RUN_METRICS

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[1]
D1, D2 = "2026-11-23", "2026-11-24"
INGESTED = ("interactions", "vocab_users", "vocab_items", "rejects")
# The k-means engine is part of what is compared: fits give the same centroids on any slot count and either
# engine (tests/test_kmeans.py), so the local[2] reference and the one-core cluster date run the default
# (auto: the resident engine), the date under dynamic allocation falls back to the jobs engine, and the
# executor-kill build runs the jobs engine, whose iterations are ordinary Spark jobs that task retry covers
# (a resident fit that loses a task falls back too, after its connect timeout).
FAULT_KMEANS_ENGINE = "jobs"
TIMES: dict[str, float] = {}


def _bin(name: str) -> str:
    path = Path(sys.executable).parent / name
    if path.is_file():
        return str(path)
    found = shutil.which(name)
    if not found:
        pytest.skip(f"{name} not found next to this Python or on PATH (pip install pyspark provides it)")
    return found


def _load_package_script():
    spec = importlib.util.spec_from_file_location("mgoe_package", REPO / "scripts" / "package.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass
class Artifacts:
    zip: Path
    env: Path


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory, request) -> Artifacts:
    """The ``make package`` artifacts: the zip fresh, the packed env cached by what goes into it."""
    package = _load_package_script()
    start = time.perf_counter()
    zip_path = package.build_zip(tmp_path_factory.mktemp("dist"))
    key_text = "|".join([sys.version, *package.pinned_requirements(), (REPO / "scripts" / "package.py").read_text()])
    key = hashlib.sha256(key_text.encode()).hexdigest()[:16]
    cache = Path(request.config.cache.mkdir("mgoe-env")) / key
    env = cache / f"mgoe-env-{package.version()}.tar.gz"
    if not env.is_file():
        for old in cache.parent.iterdir():
            shutil.rmtree(old, ignore_errors=True)
        package.build_env(cache, from_installed=True, compresslevel=1)
    TIMES["package (zip + env, cached env: ~0)"] = time.perf_counter() - start
    return Artifacts(zip_path, env)


@dataclass
class Cluster:
    url: str
    state: Path
    worker_pids: list[int]

    def executor_pids(self) -> list[int]:
        """The live executor JVMs: children of the worker JVMs (found through /proc, not by name)."""
        return [
            pid for w in self.worker_pids for pid in _children(w) if "CoarseGrainedExecutorBackend" in _cmdline(pid)
        ]

    def executor_dirs(self) -> list[Path]:
        """Every executor directory any application got (one per executor launched, killed ones included)."""
        return sorted(self.state.glob("work/worker-*/app-*/*"))


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry))
    return out


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "(Z)" not in _stat_state(pid)


def _stat_state(pid: int) -> str:
    try:
        return "(" + Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] + ")"
    except OSError:
        return "(Z)"


@pytest.fixture(scope="session")
def cluster(tmp_path_factory) -> Cluster:
    """scripts/local_cluster.sh start (master + 2 workers x 1 core x 1g), stopped by pid at teardown."""
    state = tmp_path_factory.mktemp("cluster")
    env = {**os.environ, "MGOE_CLUSTER_DIR": str(state), "PYTHON": sys.executable}
    script = str(REPO / "scripts" / "local_cluster.sh")
    start = time.perf_counter()
    done = subprocess.run([script, "start"], env=env, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        subprocess.run([script, "stop"], env=env, capture_output=True, timeout=120)
        pytest.fail(f"local_cluster.sh start failed:\n{done.stdout}\n{done.stderr}")
    TIMES["cluster start"] = time.perf_counter() - start
    url = done.stdout.strip().splitlines()[-1]
    assert url.startswith("spark://127.0.0.1:"), done.stdout
    started = [int((state / f).read_text()) for f in ("master.pid", "worker-1.pid", "worker-2.pid")]
    yield Cluster(url, state, started[1:])
    spawned = started + [c for w in started[1:] for c in _children(w)]
    stopped = subprocess.run([script, "stop"], env=env, capture_output=True, text=True, timeout=120)
    left = [pid for pid in spawned if _alive(pid)]
    assert stopped.returncode == 0 and not left, f"still running after stop: {left}\n{stopped.stdout}"
    for name, seconds in TIMES.items():
        print(f"[cluster timing] {name}: {seconds:.1f} s")


def _submit(
    cluster: Cluster, artifacts: Artifacts, job: str, args: list[str], cwd: Path, *, conf: tuple[str, ...] = ()
) -> subprocess.Popen:
    """Start ``spark-submit --master spark://... --py-files zip --archives env#env <copy of jobs/job.py>``
    in its own process group (so the test can kill the whole driver). Output goes to ``cwd/<job>.log``."""
    cwd.mkdir(parents=True, exist_ok=True)
    app = cwd / "app" / f"{job}.py"
    app.parent.mkdir(exist_ok=True)
    shutil.copy(REPO / "jobs" / f"{job}.py", app)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "SPARK_HOME", "PYSPARK_GATEWAY_PORT")}
    env.update(PYSPARK_DRIVER_PYTHON=sys.executable, SPARK_LOCAL_IP="127.0.0.1")
    settings = {
        "spark.pyspark.python": "./env/bin/python",  # executors: the packed env, unpacked as ./env
        "spark.pyspark.driver.python": sys.executable,
        "spark.executor.memory": "768m",
        "spark.executor.cores": "1",
        "spark.ui.showConsoleProgress": "false",
    }
    cmd = [_bin("spark-submit"), "--master", cluster.url, "--py-files", str(artifacts.zip)]
    cmd += ["--archives", f"{artifacts.env}#env"]
    for key, value in settings.items():
        cmd += ["--conf", f"{key}={value}"]
    for item in conf:
        cmd += ["--conf", item]
    log = open(cwd / f"{job}.log", "ab")  # noqa: SIM115 (closed by _wait)
    proc = subprocess.Popen(
        [*cmd, str(app), *args], cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    proc.log_path = cwd / f"{job}.log"  # type: ignore[attr-defined]
    proc.log_file = log  # type: ignore[attr-defined]
    return proc


def _wait(proc: subprocess.Popen, timeout: float = 900) -> str:
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    proc.log_file.close()
    return proc.log_path.read_text(errors="replace")


def _common(root: Path, run_date: str) -> list[str]:
    return ["--profile", "test", "--run-date", run_date, "--output", str(root)]


# ---- the local[2] reference -------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def raw_log(spark, tmp_path_factory) -> Path:
    from jobs.generate import run_generate
    from mgoe_spark.config import load_config

    out = tmp_path_factory.mktemp("raw")
    cfg = load_config(profile="test", overrides=[f"output.root={out / 'truth'}"])
    run_generate(spark, cfg, str(out / "log"), D1)
    return out / "log"


@pytest.fixture(scope="session")
def reference(spark, raw_log, tmp_path_factory) -> Path:
    """The same build on the tests' own local[2] session, in this process."""
    from jobs.ingest import run_ingest
    from jobs.pipeline import run_features, run_nodes
    from mgoe_spark.config import load_config

    root = tmp_path_factory.mktemp("reference")
    cfg = load_config(profile="test", overrides=[f"output.root={root}"])
    start = time.perf_counter()
    run_ingest(spark, cfg, str(raw_log), D1)
    run_nodes(spark, cfg, D1)
    run_features(spark, cfg, D1)
    TIMES["local[2] build (in-process, warm JVM)"] = time.perf_counter() - start
    return root


def _tables(root: Path, run_date: str) -> dict[str, pa.Table]:
    out = {}
    for table_dir in sorted(root.iterdir()):
        part = table_dir / f"run_date={run_date}"
        if part.is_dir() and table_dir.name != RUN_METRICS.name:  # run_metrics holds timings
            schema = REGISTRY[table_dir.name].arrow(with_partition=False)
            table = pq.read_table(part, schema=schema)
            if "version" in table.column_names:  # centroids: "<run date>-<content hash>"
                version = [v.replace(run_date, "RUN_DATE", 1) for v in table["version"].to_pylist()]
                table = table.set_column(table.column_names.index("version"), "version", pa.array(version))
            out[table_dir.name] = table
    return out


def _is_float(t: pa.DataType) -> bool:
    while pa.types.is_list(t) or pa.types.is_large_list(t):
        t = t.value_type
    return pa.types.is_floating(t)


def _sorted_rows(table: pa.Table) -> tuple[list, list]:
    """(exact part, float part) of each row, rows sorted by the exact part (keys, ids, strings, int lists)."""
    exact = [n for n in table.column_names if not _is_float(table.schema.field(n).type)]
    floats = [n for n in table.column_names if n not in exact]
    cols = table.to_pydict()

    def freeze(v):
        return tuple(freeze(x) for x in v) if isinstance(v, list) else v

    rows = sorted(
        zip(
            zip(*(map(freeze, cols[n]) for n in exact), strict=True) if exact else [()] * table.num_rows,
            zip(*(cols[n] for n in floats), strict=True) if floats else [()] * table.num_rows,
            strict=True,
        ),
        key=lambda r: repr(r[0]),
    )
    return [r[0] for r in rows], [r[1] for r in rows]


def _flat(values) -> list[float]:
    out: list[float] = []
    for v in values:
        if isinstance(v, list | tuple):
            out.extend(_flat(v))
        else:
            out.append(np.nan if v is None else float(v))
    return out


def assert_same_tables(
    got_root: Path, got_date: str, want_root: Path, want_date: str = D1, ignore: dict[str, list[str]] | None = None
) -> None:
    """``ignore``: {table: columns} left out of the comparison (e.g. why an engine fell back)."""
    got, want = _tables(got_root, got_date), _tables(want_root, want_date)
    assert sorted(got) == sorted(want)
    for name, table in want.items():
        other = got[name]
        for column in (ignore or {}).get(name, []):
            table, other = table.drop_columns([column]), other.drop_columns([column])
        assert other.num_rows == table.num_rows, name
        exact_got, float_got = _sorted_rows(other)
        exact_want, float_want = _sorted_rows(table)
        assert exact_got == exact_want, f"{name}: integer / string columns differ"
        a, b = np.array(_flat(float_got)), np.array(_flat(float_want))
        assert a.shape == b.shape, name
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-12, equal_nan=True, err_msg=name)


def _copy_ingested(reference: Path, root: Path) -> None:
    for name in INGESTED:
        if (reference / name).is_dir():
            shutil.copytree(reference / name, root / name)


# ---- the tests --------------------------------------------------------------------------------------------


def test_two_dates_built_at_once_on_the_cluster_equal_the_local_build(cluster, artifacts, raw_log, reference, tmp_path):
    root = tmp_path / "out"
    # One core each: both applications run side by side; no warm start, so neither date reads the other.
    # Both leave the engine at its default (auto): D1's fit runs the resident engine on its one slot; D2 runs
    # under dynamic allocation, where the resident engine cannot run: its fit must fall back to one job per
    # iteration, say so in kmeans_stats, and give the same tables.
    common = ["--input", str(raw_log), "--set", "kmeans.warm_start=false"]
    per_date = {
        D1: ([], ("spark.cores.max=1",)),
        D2: (
            [],
            (
                "spark.cores.max=1",
                "spark.dynamicAllocation.enabled=true",
                "spark.dynamicAllocation.shuffleTracking.enabled=true",
                "spark.dynamicAllocation.maxExecutors=1",
            ),
        ),
    }
    start = time.perf_counter()
    procs = {
        d: _submit(cluster, artifacts, "build", [*common, *extra, *_common(root, d)], tmp_path / d, conf=conf)
        for d, (extra, conf) in per_date.items()
    }
    logs = {d: _wait(p) for d, p in procs.items()}
    TIMES["cluster build, two dates at once (1 executor each)"] = time.perf_counter() - start
    for d, proc in procs.items():
        assert proc.returncode == 0, logs[d][-4000:]
        assert "[features]" in logs[d] and "windows: features <=" in logs[d]
    assert len(cluster.executor_dirs()) >= 2  # the executors ran as their own JVMs under the workers
    want = pq.read_table(reference / "kmeans_stats" / f"run_date={D1}").to_pylist()
    assert {r["engine"] for r in want} == {"resident"}, want
    stats = {d: pq.read_table(root / "kmeans_stats" / f"run_date={d}").to_pylist() for d in (D1, D2)}
    assert {r["engine"] for r in stats[D1]} == {"resident"}, stats[D1]
    assert {r["engine"] for r in stats[D2]} == {"jobs"}, stats[D2]
    assert all("dynamic allocation" in (r["fallback_reason"] or "") for r in stats[D2]), stats[D2]
    assert_same_tables(root, D1, reference)
    assert_same_tables(root, D2, reference, ignore={"kmeans_stats": ["engine", "fallback_reason"]})
    for name in os.listdir(root):  # nothing left half-written by either
        assert not list((root / name / "_staging").glob("*")) if (root / name / "_staging").is_dir() else True


def _stage_seconds(log: str) -> dict[str, str]:
    """{stage: its seconds=} from the one line per stage a job prints."""
    found = re.findall(r"^\[(\w+)\] .*?\bseconds=([\d.,]+)", log, flags=re.M)
    return dict(found)


def _published(root: Path, table: str, run_date: str = D1) -> bool:
    return (root / table / f"run_date={run_date}").is_dir()


def _staging(root: Path, table: str) -> list[Path]:
    d = root / table / "_staging"
    return list(d.iterdir()) if d.is_dir() else []


def test_executor_killed_mid_nodes_and_mid_features_the_build_completes_unchanged(
    cluster, artifacts, reference, tmp_path
):
    if os.environ.get("MGOE_CLUSTER_BASELINE"):  # measurement only: the same build without faults first
        base = tmp_path / "baseline"
        _copy_ingested(reference, base)
        start = time.perf_counter()
        args = ["--set", f"kmeans.engine={FAULT_KMEANS_ENGINE}", *_common(base, D1)]
        proc = _submit(cluster, artifacts, "build", args, tmp_path / "baseline-run")
        log = _wait(proc)
        assert proc.returncode == 0, log[-3000:]
        TIMES["cluster build, 2 executors, no fault"] = time.perf_counter() - start
        print("[cluster timing] baseline stage seconds:", _stage_seconds(log))
    root = tmp_path / "out"
    _copy_ingested(reference, root)
    before = len(cluster.executor_dirs())
    args = ["--set", f"kmeans.engine={FAULT_KMEANS_ENGINE}", *_common(root, D1)]
    start = time.perf_counter()
    proc = _submit(cluster, artifacts, "build", args, tmp_path / "run")
    kills: list[tuple[str, int, float]] = []
    # mid-nodes: pair_scores published (the stage's first write), kmeans_stats (its last) not yet;
    # mid-features: nodes done and the first features table being written, training_examples not yet.
    phases = [
        ("nodes", lambda: _published(root, "pair_scores") and not _published(root, "kmeans_stats")),
        ("features", lambda: bool(_staging(root, "macro_edges")) and not _published(root, "training_examples")),
    ]
    while proc.poll() is None and phases:
        name, ready = phases[0]
        executors = cluster.executor_pids()
        if ready() and executors:
            os.kill(executors[0], signal.SIGKILL)
            kills.append((name, executors[0], time.perf_counter() - start))
            phases.pop(0)
        time.sleep(0.05)
    log = _wait(proc)
    TIMES["cluster build, 2 executors, one killed mid-nodes and one mid-features"] = time.perf_counter() - start
    assert proc.returncode == 0, log[-4000:]
    print("[cluster timing] kills (stage, pid, seconds into the run):", kills)
    print("[cluster timing] faulted stage seconds:", _stage_seconds(log))
    assert [k[0] for k in kills] == ["nodes", "features"], (kills, log[-3000:])
    assert len(cluster.executor_dirs()) - before >= 4  # 2 executors + a replacement for each killed one
    assert_same_tables(root, D1, reference, ignore={"kmeans_stats": ["engine"]})


def test_driver_killed_mid_write_keeps_the_previous_version_and_the_next_run_cleans_up(
    cluster, artifacts, raw_log, reference, tmp_path
):
    # The write that is killed is ingest's `interactions` (the table every stage reads): TableStore.write is
    # the one write path of every table, so this is the cheapest application that exercises it on the cluster.
    root = tmp_path / "out"
    for name in INGESTED:  # a complete previous version of D1's ingest
        if (reference / name).is_dir():
            shutil.copytree(reference / name, root / name)
    previous = pq.read_table(root / "interactions" / f"run_date={D1}")
    # One file of the log: the new version differs from the previous one (fewer rows).
    one_file = sorted(raw_log.glob("*.csv"))[0]
    args = ["--input", str(one_file), *_common(root, D1)]
    start = time.perf_counter()
    proc = _submit(cluster, artifacts, "ingest", args, tmp_path / "killed")
    while proc.poll() is None and not _staging(root, "interactions"):
        time.sleep(0.02)
    killed_at = time.perf_counter() - start
    os.killpg(proc.pid, signal.SIGKILL)  # spark-submit's JVM and the Python driver: the whole driver
    log = _wait(proc)
    assert proc.returncode == -signal.SIGKILL, f"the run ended before the kill:\n{log[-3000:]}"
    leftover = _staging(root, "interactions")
    assert leftover, "the kill should have left the hidden staging directory"
    key = [("user_id", "ascending"), ("item_id", "ascending"), ("task", "ascending"), ("ts", "ascending")]
    now = pq.read_table(root / "interactions" / f"run_date={D1}")
    assert now.sort_by(key).equals(previous.sort_by(key))  # the previous version, whole

    start_rerun = time.perf_counter()
    rerun = _submit(cluster, artifacts, "ingest", args, tmp_path / "rerun")
    log = _wait(rerun)
    TIMES[f"driver killed {killed_at:.0f} s into ingest (mid-write); the rerun of ingest"] = (
        time.perf_counter() - start_rerun
    )
    assert rerun.returncode == 0, log[-4000:]
    assert not any(p.exists() for p in leftover) and not _staging(root, "interactions")
    new = pq.read_table(root / "interactions" / f"run_date={D1}")
    assert 0 < new.num_rows < previous.num_rows  # the new version, from the one file, replaced the old
