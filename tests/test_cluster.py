"""The build on a real Spark standalone cluster: master and two workers as separate JVMs on 127.0.0.1
(``scripts/local_cluster.sh``), every application submitted with ``spark-submit --py-files <zip> --archives
<packed env>#env`` as a user would, executors in their own JVMs that the tests kill by pid.

- two run dates submitted at the same time into one root, one executor each: the whole build of the first
  (ingest, nodes, features; the opt-in resident k-means engine) equals the ``local[2]`` build of the same input
  (default engine)
  (integer and string columns identical, floats within 1e-6 relative); neither date's writes touch the
  other's;
- the second (nodes and features under dynamic allocation, so the resident engine asked for falls back to the
  jobs engine) has its
  executor JVM killed mid-``nodes`` and again mid-``features``: it goes on through Spark's task retry and a
  replacement executor, and what it wrote equals the reference;
- then its driver is killed mid-write (``training_examples``, of which an earlier version is in place): the
  previous version stays readable, and the next run (``mgoe features``, in-process) removes the leftover
  hidden staging directory and completes the date, equal to the reference.

Cost (2 cores, idle): one cluster start (~15 s), the packed env (cached across runs in .cache/tests, ~20 s to
build), the suite's one in-process local[2] build (tests/conftest.py), two cluster applications side by side,
and the in-process rerun of one stage. Times are printed (``pytest -m cluster -s``).
"""

from __future__ import annotations

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

from mgoe_spark.core import manifest
from schemas import REGISTRY, RUN_METRICS
from tests.support import BUILD_DATE, BUILD_OVERRIDES, JVM_OPTIONS, load_package_script

# The module fixture (two applications side by side) is the longest setup of the suite: ~4 min idle.
pytestmark = [pytest.mark.cluster, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[1]
D1, D2 = BUILD_DATE, "2026-11-24"
INGESTED = ("interactions", "vocab_users", "vocab_items", "rejects")
# Every build here runs with the settings of the session's build, the local reference (tests/conftest.py):
# no warm start (the two dates built at once must not read each other), eight k-means iterations.
LEASE_SECONDS = 10
"""The lease of a run date (``output.lease_seconds``) in these builds: the rerun after the driver kill waits
until the dead driver's lease has not been renewed for this long, then takes it over."""
SETTINGS = [arg for item in (*BUILD_OVERRIDES, f"output.lease_seconds={LEASE_SECONDS}") for arg in ("--set", item)]
# The k-means engine is part of what is compared: fits give the same centroids on any slot count and either
# engine (tests/test_kmeans.py), so the local[2] reference runs the default (auto: the jobs engine) and both
# cluster dates ask for the opt-in resident engine (RESIDENT): the one-core date runs it across JVMs, and the
# date under dynamic allocation, whose executor is killed twice, falls back to the jobs engine, whose
# iterations are ordinary Spark jobs that task retry covers.
RESIDENT = ["--set", "kmeans.engine=resident"]
TIMES: dict[str, float] = {}


def _bin(name: str) -> str:
    path = Path(sys.executable).parent / name
    if path.is_file():
        return str(path)
    found = shutil.which(name)
    if not found:
        pytest.skip(f"{name} not found next to this Python or on PATH (pip install pyspark provides it)")
    return found


@dataclass
class Artifacts:
    zip: Path
    env: Path


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory, packed_env) -> Artifacts:
    """The ``make package`` artifacts: the zip fresh, the packed env cached by what goes into it (conftest)."""
    start = time.perf_counter()
    zip_path = load_package_script().build_zip(tmp_path_factory.mktemp("dist"))
    TIMES["package zip (the env: the cached packed_env fixture)"] = time.perf_counter() - start
    return Artifacts(zip_path, packed_env.archive)


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
    env["SPARK_DAEMON_JAVA_OPTS"] = JVM_OPTIONS  # master and workers
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
        # Every executor here is on the one machine, so waiting for a "local" slot (3 s per locality level by
        # default) only adds latency to each stage; it changes nothing that is compared.
        "spark.locality.wait": "0s",
        "spark.driver.extraJavaOptions": JVM_OPTIONS,  # the profile's reaches only an in-process driver
        "spark.executor.extraJavaOptions": JVM_OPTIONS,
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


# ---- the local[2] reference: the session's build (tests/conftest.py) ------------------------------------


@pytest.fixture(scope="session")
def raw_log(built) -> Path:
    return built.raw_log


@pytest.fixture(scope="session")
def reference(built) -> Path:
    """The same build on the tests' own local[2] session, in this process (the session's one build)."""
    TIMES["local[2] build (in-process, shared by the suite)"] = built.seconds
    return built.root


def _tables(root: Path, run_date: str) -> dict[str, pa.Table]:
    out = {}
    for table_dir in sorted(root.iterdir()):
        part = table_dir / f"run_date={run_date}"
        if part.is_dir() and table_dir.name != RUN_METRICS.name and not table_dir.name.startswith("_"):
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
        # ties of the exact part (the events space: one pair's events in a split) by their rounded floats
        key=lambda r: (repr(r[0]), repr(np.round(_flat(r[1]), 5).tolist())),
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
    got_root: Path,
    got_date: str,
    want_root: Path,
    want_date: str = D1,
    ignore: dict[str, list[str]] | None = None,
    only: set[str] | None = None,
) -> None:
    """``ignore``: {table: columns} left out of the comparison (e.g. why an engine fell back); ``only``:
    compare just these tables (default: every table, and both roots must hold the same ones)."""
    got, want = _tables(got_root, got_date), _tables(want_root, want_date)
    if only is not None:
        want = {name: table for name, table in want.items() if name in only}
    assert sorted(got) == sorted(want) if only is None else set(want) <= set(got)
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


# ---- the tests --------------------------------------------------------------------------------------------


def _stage_seconds(log: str) -> dict[str, str]:
    """{stage: its seconds=} from the one line per stage a job prints."""
    found = re.findall(r"^\[(\w+)\] .*?\bseconds=([\d.,]+)", log, flags=re.M)
    return dict(found)


def _published(root: Path, table: str, run_date: str) -> bool:
    return (root / table / f"run_date={run_date}").is_dir()


def _staging(root: Path, table: str, run_date: str) -> list[Path]:
    """The hidden staging directories of ``run_date``'s writes of ``table`` (other dates' are left out)."""
    d = root / table / "_staging"
    return [p for p in d.iterdir() if p.name.startswith(f"run_date={run_date}.")] if d.is_dir() else []


@dataclass
class TwoDates:
    """What the two applications submitted at once left: the root, each date's log and exit code, the kills,
    how long both ran side by side, how many executor JVMs the cluster launched for them, and what D2's
    killed driver left (a copy of D2's partitions taken before the rerun, the staging it left behind, the
    previous version of the table it was writing)."""

    root: Path
    logs: dict[str, str]
    returncodes: dict[str, int]
    kills: list[tuple[str, int, float]]
    overlap_s: float
    executors_launched: int
    at_kill: Path
    staging_left: list[Path]
    previous: pa.Table


KILLED_WRITE = "training_examples"
"""The table D2's driver is killed while writing: the last big write of the build."""


def _previous_version(reference: Path, root: Path) -> pa.Table:
    """A complete earlier version of D2's ``training_examples`` (half the reference's rows), so that what a
    killed write leaves can be told apart from the new version."""
    part = reference / KILLED_WRITE / f"run_date={D1}"
    table = pq.read_table(part, schema=REGISTRY[KILLED_WRITE].arrow(with_partition=False))
    table = table.slice(0, table.num_rows // 2)
    out = root / KILLED_WRITE / f"run_date={D2}"
    out.mkdir(parents=True)
    pq.write_table(table, out / "part-00000.parquet")
    return table


def _watch(procs: dict[str, subprocess.Popen], cluster: Cluster, root: Path, tag: str, start: float):
    """Poll both applications until they end; kill D2's executor mid-nodes and mid-features, then D2's whole
    driver (spark-submit's JVM and the Python driver) once its write of :data:`KILLED_WRITE` has begun.
    Returns (kills, seconds both ran side by side)."""
    phases = [  # (what, when, whom): executors are found by the tag on their command line
        (
            "nodes",
            lambda: bool(_staging(root, "pair_scores", D2)) and not _published(root, "centroids", D2),
            "executor",
        ),  # noqa: E501
        ("features", lambda: bool(_staging(root, "macro_edges", D2)), "executor"),
        ("driver", lambda: bool(_staging(root, KILLED_WRITE, D2)), "driver"),
    ]
    kills: list[tuple[str, int, float]] = []
    overlap, last = 0.0, time.perf_counter()
    while any(p.poll() is None for p in procs.values()):
        now = time.perf_counter()
        if all(p.poll() is None for p in procs.values()):
            overlap += now - last
        last = now
        if phases and phases[0][1]():
            what, _, whom = phases[0]
            if whom == "driver":
                os.killpg(procs[D2].pid, signal.SIGKILL)
                kills.append((what, procs[D2].pid, now - start))
                phases.pop(0)
            else:
                executors = [e for e in cluster.executor_pids() if tag in _cmdline(e)]
                if executors:
                    os.kill(executors[0], signal.SIGKILL)
                    kills.append((what, executors[0], now - start))
                    phases.pop(0)
        time.sleep(0.05)
    return kills, overlap


def _wait_for_stale_lease(root: Path, run_date: str) -> None:
    lease = root / "_leases" / f"run_date={run_date}"
    while lease.exists() and time.time() - lease.stat().st_mtime <= LEASE_SECONDS + 0.5:
        time.sleep(0.5)


@pytest.fixture(scope="module")
def two_dates(cluster, artifacts, raw_log, reference, tmp_path_factory) -> TwoDates:
    """D1 and D2 submitted at the same time into one root, one executor each; no warm start, so neither date
    reads the other.

    - D1: the whole build (ingest, nodes, features) from the raw log with the opt-in resident engine, which
      runs on its one slot.
    - D2: nodes and features over an ingest already in place (the reference's, as D2), under dynamic
      allocation, where the resident engine cannot run (its fit falls back to one job per iteration). Its
      executor JVM, tagged by a system property on its command line, is killed mid-nodes and again
      mid-features; then its driver is killed while writing ``training_examples``, of which an earlier
      version is in place. The next run, ``mgoe features`` for D2 in this process (the clean-up is the
      driver's file-system work, the same on any master), completes the date.
    """
    from jobs.cli import main

    tmp = tmp_path_factory.mktemp("two-dates")
    root = tmp / "out"
    for name in INGESTED:  # without version markers: partitions as written before manifests, readable as they are
        if (reference / name / f"run_date={D1}").is_dir():
            src, dst = reference / name / f"run_date={D1}", root / name / f"run_date={D2}"
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns(manifest.VERSION_MARKER))
    previous = _previous_version(reference, root)
    tag = "-Dmgoe.test.faulted=true"
    one_core = "spark.cores.max=1"
    dynamic = (
        "spark.dynamicAllocation.enabled=true",
        "spark.dynamicAllocation.shuffleTracking.enabled=true",
        "spark.dynamicAllocation.maxExecutors=1",
        f"spark.executor.extraJavaOptions={JVM_OPTIONS} {tag}",
    )
    runs = {D1: (["--input", str(raw_log), *RESIDENT], (one_core,)), D2: (RESIDENT, (one_core, *dynamic))}
    before = len(cluster.executor_dirs())
    start = time.perf_counter()
    procs = {
        d: _submit(cluster, artifacts, "build", [*extra, *SETTINGS, *_common(root, d)], tmp / d, conf=conf)
        for d, (extra, conf) in runs.items()
    }
    kills, overlap = _watch(procs, cluster, root, tag, start)
    logs = {d: _wait(p) for d, p in procs.items()}
    TIMES["cluster build, two dates at once (1 executor each; D2's killed 3 times)"] = time.perf_counter() - start
    for d in logs:
        print(f"[cluster timing] {d} stage seconds:", _stage_seconds(logs[d]))
    print("[cluster timing] kills (what, pid, seconds into the run):", kills)
    at_kill = tmp / "at-kill"  # D2's partitions, and the features tables it had staged, as the killed driver left them
    for table_dir in root.iterdir():
        complete = [p for p in _staging(root, table_dir.name, D2) if (p / manifest.VERSION_MARKER).exists()]
        for src in [table_dir / f"run_date={D2}", *complete][-1:]:  # staged: features' new version, unpublished
            if src.is_dir():
                shutil.copytree(src, at_kill / table_dir.name / f"run_date={D2}")
    staging_left = _staging(root, KILLED_WRITE, D2)
    _wait_for_stale_lease(root, D2)
    rerun = time.perf_counter()
    assert main(["features", *SETTINGS, *_common(root, D2)]) == 0
    TIMES["the rerun of D2's features after the driver kill, in-process"] = time.perf_counter() - rerun
    return TwoDates(
        root,
        logs,
        {d: p.returncode for d, p in procs.items()},
        kills,
        overlap,
        len(cluster.executor_dirs()) - before,
        at_kill,
        staging_left,
        previous,
    )


def _completed(run: TwoDates, run_date: str) -> None:
    assert run.returncodes[run_date] == 0, run.logs[run_date][-4000:]
    assert "[features]" in run.logs[run_date] and "windows: features <=" in run.logs[run_date]


def test_the_whole_build_on_the_cluster_equals_the_local_build(two_dates, reference):
    _completed(two_dates, D1)
    assert "[ingest]" in two_dates.logs[D1]
    want = pq.read_table(reference / "kmeans_stats" / f"run_date={D1}").to_pylist()
    assert {r["engine"] for r in want} == {"jobs"}, want
    got = pq.read_table(two_dates.root / "kmeans_stats" / f"run_date={D1}").to_pylist()
    assert {r["engine"] for r in got} == {"resident"}, got
    assert {r["fallback_reason"] for r in got} == {None}, got
    # the engines give the same fit: everything else is equal
    assert_same_tables(two_dates.root, D1, reference, ignore={"kmeans_stats": ["engine"]})


def test_executor_killed_mid_nodes_and_mid_features_the_build_goes_on_unchanged(two_dates, reference):
    """What D2's application wrote after its executor was killed twice (everything up to the killed
    driver's write, taken before the rerun) equals the reference."""
    assert [k[0] for k in two_dates.kills] == ["nodes", "features", "driver"], (
        two_dates.kills,
        two_dates.logs[D2][-3000:],
    )
    assert "[nodes]" in two_dates.logs[D2]  # nodes completed through the kill, in the application
    # executors are their own JVMs under the workers: one per date, and a replacement for each one killed
    assert two_dates.executors_launched >= 4
    stats = pq.read_table(two_dates.at_kill / "kmeans_stats" / f"run_date={D2}").to_pylist()
    assert {r["engine"] for r in stats} == {"jobs"}, stats
    assert all("dynamic allocation" in (r["fallback_reason"] or "") for r in stats), stats
    # assignments: nodes wrote the train snapshot, features rewrites both snapshots at its end
    written = {p.name for p in two_dates.at_kill.iterdir()} - {KILLED_WRITE, "assignments", *INGESTED}
    assert {"pair_scores", "centroids", "macro_edges", "recent_neighbors", "task_lookup", "samples"} <= written
    ignore = {"kmeans_stats": ["engine", "fallback_reason"]}
    assert_same_tables(two_dates.at_kill, D2, reference, ignore=ignore, only=written)


def test_driver_killed_mid_write_keeps_the_previous_version_and_the_next_run_cleans_up(two_dates, reference):
    assert two_dates.returncodes[D2] == -signal.SIGKILL, two_dates.logs[D2][-3000:]
    assert two_dates.staging_left, "the kill should have left the hidden staging directory"
    schema = REGISTRY[KILLED_WRITE].arrow(with_partition=False)
    left = pq.read_table(two_dates.at_kill / KILLED_WRITE / f"run_date={D2}", schema=schema)
    assert left.equals(two_dates.previous)  # the previous version (one file, as written), whole
    # the next run removed the leftover and completed the date: every table equals the reference
    assert not any(p.exists() for p in two_dates.staging_left) and not _staging(two_dates.root, KILLED_WRITE, D2)
    assert_same_tables(two_dates.root, D2, reference, ignore={"kmeans_stats": ["engine", "fallback_reason"]})


def test_two_dates_built_at_once_into_one_root_do_not_interfere(two_dates):
    _completed(two_dates, D1)
    assert two_dates.overlap_s > 30, f"the applications ran side by side for {two_dates.overlap_s:.0f} s only"
    for table_dir in (d for d in two_dates.root.iterdir() if not d.name.startswith("_")):
        dates = sorted(p.name for p in table_dir.glob("run_date=*"))
        assert dates == [f"run_date={D1}", f"run_date={D2}"], (table_dir.name, dates)
        staging = table_dir / "_staging"
        assert not staging.is_dir() or not list(staging.iterdir()), f"{table_dir.name}: left half-written"
