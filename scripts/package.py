#!/usr/bin/env python3
"""Build the artifacts a cluster run needs (see docs/running-on-a-cluster.md).

- ``dist/mgoe-<version>.zip``: the Python packages (mgoe_spark, schemas, jobs, model, with package data)
  for ``spark-submit --py-files``. Deterministic: sorted entries, fixed timestamps, so the same sources give
  a byte-identical zip (cache-friendly on HDFS / S3).
- ``dist/mgoe-env-<version>.tar.gz``: a relocatable Python for ``spark-submit --archives
  ...#environment``: the running interpreter's own installation (binary, shared libpython, standard
  library) plus what Spark's driver and executors import: setup.cfg's ``install_requires`` at their pins,
  less the ``exclude`` list of its ``[mgoe:packed-env]`` section (PySpark, the trainer's torch, ...), with
  ``bin/python`` a wrapper that finds its libpython relative to itself. Unpacked
  anywhere (a YARN container, a Kubernetes pod) ``./environment/bin/python`` works. PySpark itself is not
  in it: the cluster's Spark puts its own ``pyspark.zip`` / py4j on the workers' path. Nodes need an x86-64
  glibc no older than the build machine's (build on the oldest OS image you run).

Usage::

    python scripts/package.py            # both
    python scripts/package.py zip        # only the --py-files zip (a second)
    python scripts/package.py env        # only the environment (minutes: pip install + gzip)
    python scripts/package.py env --from-installed   # copy the running venv's installed packages instead
                                                     # of pip (offline; checks they match the pins)
    python scripts/package.py env --fast             # gzip level 1 (about 3x faster to pack, ~10% bigger)
"""

from __future__ import annotations

import argparse
import configparser
import os
import re
import shutil
import stat
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("mgoe_spark", "schemas", "jobs", "model")
DATA_SUFFIXES = (".py", ".yaml", ".yml", ".json")
ENV_SECTION = "mgoe:packed-env"
# Import names of the distributions whose import name is not their (normalized) project name.
IMPORT_NAMES = {"faiss-cpu": "faiss", "pyyaml": "yaml"}
# Parts of the standard library a batch job never imports: tests, GUI, IDE (about 100 MB).
STDLIB_PRUNE = ("test", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3", "site-packages")
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


def _setup_cfg(repo: Path = REPO) -> configparser.ConfigParser:
    cfg = configparser.ConfigParser()
    cfg.read(repo / "setup.cfg")
    return cfg


def version() -> str:
    return _setup_cfg()["metadata"]["version"]


def _lines(text: str) -> list[str]:
    return [ln.split("#")[0].strip() for ln in text.splitlines() if ln.split("#")[0].strip()]


def requirement_name(line: str) -> str:
    """The normalized project name of a requirement line (``pandas>=2.2,<3`` -> ``pandas``)."""
    return _norm(re.split(r"[\s;<>=!~\[(]", line.strip(), maxsplit=1)[0])


def env_packages(repo: Path = REPO) -> tuple[str, ...]:
    """What the packed environment holds: setup.cfg's ``install_requires`` less its ``[mgoe:packed-env]``
    ``exclude`` (one source of truth: a new dependency of the pipeline is packed unless excluded there). An
    excluded name that is no requirement is an error, so a typo cannot pack what it meant to leave out."""
    cfg = _setup_cfg(repo)
    required = [requirement_name(ln) for ln in _lines(cfg["options"]["install_requires"])]
    excluded = {_norm(n) for n in _lines(cfg.get(ENV_SECTION, "exclude", fallback=""))}
    unknown = excluded - set(required)
    if unknown:
        raise SystemExit(f"package.py: setup.cfg [{ENV_SECTION}] excludes {sorted(unknown)}, not in install_requires")
    return tuple(name for name in required if name not in excluded)


def import_name(project: str) -> str:
    return IMPORT_NAMES.get(_norm(project), _norm(project).replace("-", "_"))


def pinned_requirements(names: tuple[str, ...] | None = None) -> list[str]:
    """The setup.cfg ``install_requires`` lines for ``names`` (default: :func:`env_packages`), so the env
    matches the project's pins."""
    wanted = {_norm(n) for n in (env_packages() if names is None else names)}
    found = [ln for ln in _lines(_setup_cfg()["options"]["install_requires"]) if requirement_name(ln) in wanted]
    if len(found) != len(wanted):
        raise SystemExit(f"package.py: setup.cfg install_requires lacks some of {sorted(wanted)}")
    return found


def package_files(repo: Path = REPO) -> list[Path]:
    """Source and data files of the shipped packages, relative to ``repo``, sorted."""
    out = []
    for pkg in PACKAGES:
        root = repo / pkg
        if not (root / "__init__.py").is_file():
            raise SystemExit(f"package.py: {root} is not a package")
        for path in root.rglob("*"):
            if path.is_file() and path.suffix in DATA_SUFFIXES and "__pycache__" not in path.parts:
                out.append(path.relative_to(repo))
    return sorted(out)


def build_zip(dist: Path, repo: Path = REPO) -> Path:
    """Write ``dist/mgoe-<version>.zip`` (deterministic) and return its path."""
    dist.mkdir(parents=True, exist_ok=True)
    target = dist / f"mgoe-{version()}.zip"
    tmp = target.with_suffix(".zip.tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for rel in package_files(repo):
            info = zipfile.ZipInfo(rel.as_posix(), ZIP_EPOCH)
            info.external_attr = (stat.S_IFREG | 0o644) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, (repo / rel).read_bytes())
    os.replace(tmp, target)
    return target


WRAPPER = """#!/bin/sh
# Relocatable entry point: run the bundled interpreter with its bundled libpython, wherever unpacked.
here="$(cd "$(dirname "$0")" && pwd)"
LD_LIBRARY_PATH="$here/../lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export LD_LIBRARY_PATH
exec "$here/python%(ver)s" "$@"
"""


def installed_closure(names: tuple[str, ...] | None = None) -> list:
    """The installed distributions (importlib.metadata) of ``names`` (default: :func:`env_packages`) and
    everything they require (no extras), each checked against its setup.cfg pin. Only for the running
    interpreter."""
    import importlib.metadata as md

    names = env_packages() if names is None else names
    pins = {}
    for line in pinned_requirements(names):
        name, _, ver = line.partition("==")
        if ver:
            pins[_norm(name)] = ver.strip()
    seen: dict[str, md.Distribution] = {}
    todo = list(names)
    while todo:
        name = todo.pop()
        key = _norm(name)
        if key in seen:
            continue
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            raise SystemExit(f"package.py: {name} is not installed in {sys.executable}; run scripts/setup.sh") from None
        if key in pins and dist.version != pins[key]:
            raise SystemExit(f"package.py: installed {name}=={dist.version} but setup.cfg pins {pins[key]}")
        seen[key] = dist
        todo += [requirement_name(req) for req in dist.requires or [] if _applies(req)]
    return [seen[k] for k in sorted(seen)]


def _applies(requirement: str) -> bool:
    """Whether a requirement applies to this interpreter without extras (its PEP 508 marker, e.g. ``inspect2;
    python_version < "3"`` does not). ``packaging`` is already installed (matplotlib requires it); evaluating
    markers by hand would be a second, worse parser."""
    from packaging.requirements import Requirement

    marker = Requirement(requirement).marker
    return marker is None or marker.evaluate({"extra": ""})


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def copy_installed(site: Path, dists: list) -> None:
    """Copy every file the ``dists`` installed inside site-packages (their RECORD) into ``site``."""
    for dist in dists:
        for rel in dist.files or []:
            if rel.parts and rel.parts[0] == "..":  # console scripts in bin/: absolute shebangs, not needed
                continue
            if "__pycache__" in rel.parts:
                continue
            src = Path(dist.locate_file(rel))
            if src.is_file():
                dst = site / rel
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dst)


def build_env(
    dist: Path,
    python: str = sys.executable,
    *,
    keep: Path | None = None,
    from_installed: bool = False,
    compresslevel: int = 6,
) -> Path:
    """Write ``dist/mgoe-env-<version>.tar.gz``: a relocatable copy of ``python``'s installation + deps.

    ``from_installed``: copy the running interpreter's installed packages (and their requirements) instead
    of ``pip install`` (offline, seconds; the versions are checked against the pins). ``compresslevel``: gzip
    level (1 packs about three times faster than 6 for a ~10% bigger archive)."""
    if from_installed and Path(python).resolve() != Path(sys.executable).resolve():
        raise SystemExit("package.py: --from-installed packs the running interpreter only; drop --python")
    info = json_of(python)
    ver, base = info["ver"], Path(info["base_prefix"])
    dist.mkdir(parents=True, exist_ok=True)
    target = dist / f"mgoe-env-{version()}.tar.gz"
    with tempfile.TemporaryDirectory(prefix="mgoe-env-") as tmp:
        env = Path(tmp) / "environment"
        (env / "bin").mkdir(parents=True)
        shutil.copy2(base / "bin" / f"python{ver}", env / "bin" / f"python{ver}")
        libdir = Path(info["libdir"])
        if info["shared"]:
            (env / "lib").mkdir(exist_ok=True)
            for lib in libdir.glob(f"libpython{ver}*.so*"):
                shutil.copy2(lib, env / "lib" / lib.name)
        stdlib = base / "lib" / f"python{ver}"
        shutil.copytree(
            stdlib,
            env / "lib" / f"python{ver}",
            symlinks=True,
            ignore=lambda d, names: [
                n for n in names if (Path(d) == stdlib and n in STDLIB_PRUNE) or n == "__pycache__"
            ],
        )
        site = env / "lib" / f"python{ver}" / "site-packages"
        site.mkdir()
        if from_installed:
            copy_installed(site, installed_closure())
        else:
            pip = [python, "-m", "pip", "install", "--quiet", "--no-compile", "--only-binary=:all:"]
            subprocess.run([*pip, "--target", str(site), *pinned_requirements()], check=True)
        shutil.rmtree(site / "bin", ignore_errors=True)  # console scripts with absolute shebangs
        for name in ("python", "python3"):
            wrapper = env / "bin" / name
            wrapper.write_text(WRAPPER % {"ver": ver})
            wrapper.chmod(0o755)
        imports = ", ".join(import_name(name) for name in env_packages())
        check = subprocess.run(
            [str(env / "bin" / "python"), "-c", f"import sys, {imports}; print(sys.prefix)"],
            capture_output=True,
            text=True,
        )
        if check.returncode != 0 or Path(check.stdout.strip()) != env:
            raise SystemExit(f"package.py: the packed interpreter does not run from its new place:\n{check.stderr}")
        tmp_target = target.with_suffix(".tmp")
        with tarfile.open(tmp_target, "w:gz", compresslevel=compresslevel) as tar:
            # Members at the top level: --archives env.tar.gz#environment unpacks them into ./environment.
            for child in sorted(env.iterdir()):
                tar.add(child, arcname=child.name)
        os.replace(tmp_target, target)
        if keep is not None:
            shutil.rmtree(keep, ignore_errors=True)
            shutil.copytree(env, keep, symlinks=True)
    return target


def json_of(python: str) -> dict:
    """Facts about the interpreter ``python`` (its version, installation prefix, libpython)."""
    if Path(python).resolve() == Path(sys.executable).resolve():
        return {
            "ver": f"{sys.version_info.major}.{sys.version_info.minor}",
            "base_prefix": sys.base_prefix,
            "libdir": sysconfig.get_config_var("LIBDIR"),
            "shared": bool(sysconfig.get_config_var("Py_ENABLE_SHARED")),
        }
    code = (
        "import json, sys; sys.path.insert(0, %r); import package; print(json.dumps(package.json_of(sys.executable)))"
    )
    out = subprocess.run([python, "-c", code % str(Path(__file__).parent)], check=True, capture_output=True, text=True)
    import json

    return json.loads(out.stdout)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", nargs="?", choices=["all", "zip", "env"], default="all")
    parser.add_argument("--dist", type=Path, default=REPO / "dist", help="output folder (default: dist/)")
    parser.add_argument("--python", default=sys.executable, help="interpreter to pack (default: this one)")
    parser.add_argument(
        "--from-installed", action="store_true", help="env: copy this interpreter's installed packages, not pip"
    )
    parser.add_argument("--fast", action="store_true", help="env: gzip level 1 instead of 6")
    args = parser.parse_args(argv)
    if args.what in ("all", "zip"):
        start = time.perf_counter()
        path = build_zip(args.dist)
        print(f"[package] {path} ({path.stat().st_size / 1e3:,.0f} kB, {time.perf_counter() - start:.1f}s)")
    if args.what in ("all", "env"):
        start = time.perf_counter()
        level = 1 if args.fast else 6
        path = build_env(args.dist, args.python, from_installed=args.from_installed, compresslevel=level)
        print(f"[package] {path} ({path.stat().st_size / 1e6:,.0f} MB, {time.perf_counter() - start:.0f}s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
