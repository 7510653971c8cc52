"""Packaging: building the wheel is quiet (no setuptools warnings a new user sees in scripts/setup.sh) and the
wheel carries the built-in profiles the config loader reads; the packed environment (scripts/package.py)
holds every module a spark-submit job imports."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from mgoe_spark.config import PROFILES
from tests.support import load_package_script

REPO = Path(__file__).resolve().parents[1]
SHIPPED = ("setup.cfg", "pyproject.toml", "README.md", "mgoe_spark", "model", "jobs", "schemas", "bench")
SHIPPED += ("airflow_dags",)


def test_wheel_builds_without_setuptools_warnings_and_ships_the_profiles(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in SHIPPED:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(path, src / name)
    cmd = [sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "--no-build-isolation", "-w", str(tmp_path)]
    done = subprocess.run([*cmd, str(src)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    output = done.stdout + done.stderr
    for warning in ("Warning:", "would be ignored", "is absent from the `packages`"):
        assert warning not in output, output[output.find(warning) - 500 : output.find(warning) + 500]
    (wheel,) = tmp_path.glob("mgoe-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"mgoe_spark/profiles/{p}.yaml" for p in PROFILES} <= names


# The applications spark-submit runs (docs/running-on-a-cluster.md): their driver and executors import only
# the zip and the packed environment (plus the cluster's PySpark).
SPARK_JOBS = ("generate", "ingest", "nodes", "features", "build", "quality")
OWN = ("mgoe_spark", "jobs", "schemas", "model")


def _module_file(module: str) -> Path | None:
    path = REPO.joinpath(*module.split("."))
    for candidate in (path / "__init__.py", path.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def spark_job_imports() -> dict[str, str]:
    """{third-party top-level module: a project module importing it} over every module a spark-submit job
    can import, lazy imports inside functions included (an AST walk, nothing executed)."""
    seen, found, todo = set(), {}, [f"jobs.{job}" for job in SPARK_JOBS]
    while todo:
        module = todo.pop()
        path = _module_file(module)
        if module in seen or path is None:
            continue
        seen.add(module)
        parts = module.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # its packages' __init__
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top in OWN:
                    todo.append(name)
                elif top not in sys.stdlib_module_names:
                    found.setdefault(top, module)
    return found


def test_the_packed_env_holds_every_module_a_spark_job_imports():
    """Issue 26 item 8: the Delta writer's ``deltalake`` was missing from the packed environment. Every
    third-party module reachable from a spark-submit job must come from a packed distribution or PySpark."""
    import importlib.metadata as md

    package = load_package_script()
    packed = {package._norm(dist.metadata["Name"]) for dist in package.installed_closure()}
    providers = md.packages_distributions()
    missing = {
        top: importer
        for top, importer in spark_job_imports().items()
        if top != "pyspark" and not {package._norm(d) for d in providers.get(top, [top])} & packed
    }
    assert "deltalake" in spark_job_imports() and not missing, f"imported but not packed: {missing}"
