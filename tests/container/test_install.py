"""pyproject.toml alone installs what the package imports: a fresh venv, no lock, each extra on its own.

The venv gets imgclf from its pyproject.toml with `pip install --no-index --find-links wheelhouse/` (the image
builds' wheelhouse, docker/wheelhouse.sh: offline, and the same files the images install) and no constraints:
first the core, then each extra alone on top of it (what that extra added is uninstalled before the next one),
then `imgclf[all]`. After the core and `all` every module of the package is imported, after an extra the modules
it can change (those that failed with the core alone or import one of its packages), and every third-party name
they import, inside functions too, is looked up: a module may fail to import only for a package of an extra that
is not installed. `sagemaker` (the SDK) is not in the lock, so not in the wheelhouse: tests/unit/test_packaging.py
checks its declaration statically. Container tier: it needs the wheelhouse (built here when missing, as the image
build does) and takes a few minutes (torch); a Python other than the wheelhouse's FAILS with what to run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support import REPO, containers, imports

pytestmark = pytest.mark.container

SKIPPED_EXTRAS = ("all", "dev", *imports.OWN_VENV_EXTRAS)  # the SDK and gradio clash with the lock

# Run by the fresh venv's python: imports every module, looks up every import name; prints the problems as JSON.
CHECK = """
import importlib, importlib.util, json, sys
spec = json.load(open(sys.argv[1]))
available, declared = set(spec["available"]), set(spec["declared"])
problems, failed = [], []
for module, names in spec["modules"].items():
    for name in sorted(set(names) & available):
        if importlib.util.find_spec(name) is None:
            problems.append(f"{module} imports {name}, which this install declares but does not provide")
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as exc:
        failed.append(module)
        missing = (exc.name or "").split(".")[0]
        if missing in available or missing not in declared:
            problems.append(f"import {module}: ModuleNotFoundError: {exc}")
    except Exception as exc:
        failed.append(module)
        problems.append(f"import {module}: {type(exc).__name__}: {exc}")
print(json.dumps({"problems": problems, "failed": failed}))
"""


def pip_env(cache: Path) -> dict[str, str]:
    """The host's pip configuration, constraints and PYTHONPATH have no say: pyproject and the wheelhouse only."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_") and k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return {**env, "PIP_CONFIG_FILE": os.devnull, "PIP_CACHE_DIR": str(cache), "PIP_DISABLE_PIP_VERSION_CHECK": "1"}


def run(cmd: list[str], env: dict[str, str], timeout: float = 900) -> str:
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-5000:]}"
    return r.stdout


def installed(python: Path, env: dict[str, str]) -> set[str]:
    out = run([str(python), "-m", "pip", "list", "--format=json"], env)
    return {imports.normalize(p["name"]) for p in json.loads(out)}


@pytest.fixture(scope="module")
def wheelhouse() -> Path:
    containers.ensure_wheelhouse()
    want = (containers.WHEELHOUSE / "PYTHON_VERSION").read_text().strip()
    have = f"{sys.version_info.major}.{sys.version_info.minor}"
    if want != have:
        pytest.fail(
            f"wheelhouse/ holds packages for Python {want}, the tests run on {have}: run the tests with a Python "
            f"{want} venv, or docker/wheelhouse.sh --python-version {have} (which the image build then refuses)",
            pytrace=False,
        )
    return containers.WHEELHOUSE


def test_each_extra_installs_what_its_modules_import(wheelhouse, tmp_path):
    started = time.monotonic()
    env = pip_env(tmp_path / "pip-cache")
    declared = imports.declared()
    names_of: dict[str, list[str]] = {}
    for imp in imports.third_party_imports():
        names_of.setdefault(imp.module, []).append(imp.name)
    modules = {module: sorted(set(names_of.get(module, []))) for module in imports.modules()}
    dists_of = {name: imports.distributions_of(name) for names in modules.values() for name in names}
    everything = set().union(*declared.values())

    # imgclf from its pyproject.toml only: a copy of what the wheel is built from, so the checkout stays clean.
    source, dist = tmp_path / "source", tmp_path / "dist"
    source.mkdir()
    dist.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", str(venv)], env)
    python = venv / "bin" / "python"
    offline = ["--no-index", "--find-links", str(wheelhouse), "--find-links", str(dist)]
    run([str(python), "-m", "pip", "wheel", "-q", "--no-deps", *offline, "-w", str(dist), str(source)], env)

    stages = [imports.CORE, *(e for e in declared if e not in (imports.CORE, *SKIPPED_EXTRAS)), "all"]
    problems, timings, failed_in_core = [], {}, set(modules)
    for stage in stages:
        stage_started = time.monotonic()
        before = installed(python, env)
        requirement = "imgclf" if stage == imports.CORE else f"imgclf[{stage}]"
        run([str(python), "-m", "pip", "install", "-q", "--no-compile", *offline, requirement], env)
        added = {n for n, d in dists_of.items() if d & declared[stage]}
        available = {n for n, d in dists_of.items() if d & declared[imports.CORE]} | added
        # An extra can change only modules that failed with the core alone or import one of its packages.
        checked = {
            m: names
            for m, names in modules.items()
            if stage in (imports.CORE, "all") or m in failed_in_core or added & set(names)
        }
        spec = {
            "modules": checked,
            "available": sorted(available),
            "declared": sorted(n for n, d in dists_of.items() if d & everything),
        }
        spec_file = tmp_path / f"{stage}.json"
        spec_file.write_text(json.dumps(spec))
        out = run([str(python), "-c", CHECK, str(spec_file)], {**env, "PYTHONDONTWRITEBYTECODE": "1"})
        result = json.loads(out.strip().splitlines()[-1])
        problems += [f"[{stage}] {p}" for p in result["problems"]]
        if stage == imports.CORE:
            failed_in_core = set(result["failed"])
        if stage not in (imports.CORE, "all"):
            extra_dists = installed(python, env) - before - {"imgclf"}
            if extra_dists:
                run([str(python), "-m", "pip", "uninstall", "-y", "-q", *sorted(extra_dists)], env)
        timings[stage] = round(time.monotonic() - stage_started)
    run([str(python), "-m", "pip", "check"], env)
    print(f"\nfresh-venv install from pyproject: {time.monotonic() - started:.0f} s, by stage {timings}")
    assert not problems, "\n".join(problems)
