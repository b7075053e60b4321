"""The package's third-party imports (read from the source, lazy ones included) and the pyproject.toml extras
that declare them: what tests/unit/test_packaging.py checks statically and tests/container/test_install.py checks
in a fresh venv.

`MODULE_EXTRAS` is the table of which extras each module draws on: a module may import the core dependencies
and the packages of the extras its entry names (the longest matching entry of its dotted name; no entry = core
only). A new module that imports a package from an extra needs an entry here, and a new import a declaration in
pyproject.toml: the unit test says which.
"""

from __future__ import annotations

import ast
import functools
import importlib.metadata
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import Requirement

from support import REPO

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

SRC = REPO / "src"
PYPROJECT = REPO / "pyproject.toml"
PACKAGE = "imgclf"
CORE = "core"

# Module (or package) -> the extras whose packages it may import besides the core ones.
MODULE_EXTRAS: dict[str, tuple[str, ...]] = {
    # The container side of training: sagemaker-training, smdebug hooks, psutil in the profiler.
    "imgclf.training": ("train",),
    # Channel formats: h5py for HDF5 channels (imported only when one is read).
    "imgclf.channels": ("hdf5",),
    "imgclf.channel_formats": ("hdf5",),
    # The serving side: sagemaker-inference, multi-model-server, psutil.
    "imgclf.serving": ("serve",),
    # `imgclf tune`: optuna, matplotlib.
    "imgclf.tuning": ("tune",),
    "imgclf.cli.tune": ("tune",),
    # `imgclf export`: the ONNX exporter and ONNX Runtime (the serving engines need only the runtime).
    "imgclf.export": ("export",),
    "imgclf.cli.export": ("export",),
    # Grad-CAM (captum), also served by the serve image.
    "imgclf.explain": ("explain",),
    "imgclf.demo": ("demo",),
    "imgclf.cli.demo": ("demo",),
    # `imgclf report`: smdebug trials, matplotlib.
    "imgclf.diagnostics": ("reports",),
    # `imgclf sagemaker`: the SageMaker Python SDK.
    "imgclf.sagemaker": ("sagemaker",),
}

# Import names whose distribution the Python running the tests may not have installed (so
# importlib.metadata.packages_distributions() cannot tell): the SDK lives in scripts/sdk_venvs.sh's venvs.
# Extras that clash with the lock and live in venvs of their own (scripts/sdk_venvs.sh, scripts/browser_setup.sh):
# not in `all`, not pinned by docker/constraints.txt.
OWN_VENV_EXTRAS = ("sagemaker", "demo")

KNOWN_DISTRIBUTIONS = {"sagemaker": "sagemaker", "gradio": "gradio"}  # gradio: .venv-demo (browser tier)


@dataclass(frozen=True)
class Import:
    module: str  # the importing module, e.g. imgclf.channel_formats
    name: str  # the top-level name imported, e.g. h5py
    eager: bool  # runs when the module is imported (False: inside a function, run when that is called)
    line: int


def normalize(name: str) -> str:
    """PEP 503 name: Pillow -> pillow, sagemaker_training -> sagemaker-training."""
    return re.sub(r"[-_.]+", "-", name).lower()


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    """Every module of the package: {dotted name: file}."""
    return {module_name(p): p for p in sorted((SRC / PACKAGE).rglob("*.py"))}


def _imports_of(module: str, tree: ast.AST) -> list[Import]:
    found: list[Import] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                names = [alias.name for alias in child.names]
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                names = [child.module]
            else:
                names = []
            for name in names:
                top = name.split(".")[0]
                if top != PACKAGE and top != "__future__" and top not in sys.stdlib_module_names:
                    found.append(Import(module, top, not in_function, child.lineno))
            visit(child, nested)

    visit(tree, False)
    return found


def third_party_imports() -> list[Import]:
    """Every third-party import of every module: module level and inside functions alike."""
    found: list[Import] = []
    for name, path in modules().items():
        found += _imports_of(name, ast.parse(path.read_text(), str(path)))
    return found


@functools.cache
def _packages_distributions() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()


def distributions_of(import_name: str) -> set[str]:
    """The distributions (PEP 503 names) that provide a top-level import name; empty when none is known."""
    provided = _packages_distributions().get(import_name, [])
    names = {normalize(d) for d in provided}
    if import_name in KNOWN_DISTRIBUTIONS:
        names.add(KNOWN_DISTRIBUTIONS[import_name])
    return names


def declared() -> dict[str, set[str]]:
    """{extra or "core": the distributions it installs}, self-references (imgclf[x]) resolved."""
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    raw = {CORE: project.get("dependencies", []), **project.get("optional-dependencies", {})}
    own = normalize(project["name"])

    def resolve(group: str, seen: frozenset[str]) -> set[str]:
        names: set[str] = set()
        for spec in raw[group]:
            req = Requirement(spec)
            if normalize(req.name) == own:
                for extra in req.extras - seen:
                    names |= resolve(extra, seen | {extra})
            else:
                names.add(normalize(req.name))
        return names

    return {group: resolve(group, frozenset({group})) for group in raw}


def extras_of(module: str) -> tuple[str, ...]:
    """MODULE_EXTRAS for a module: the entry with the longest dotted prefix of its name, () when none matches."""
    matches = [key for key in MODULE_EXTRAS if module == key or module.startswith(key + ".")]
    return MODULE_EXTRAS[max(matches, key=len)] if matches else ()
