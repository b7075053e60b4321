"""pyproject.toml declares every third-party import of src/imgclf, in the core or in the extra of the module that
imports it (tests/support/imports.py's MODULE_EXTRAS), lazy imports inside functions included: an undeclared
import fails here, before a user's `pip install imgclf[...]` meets a ModuleNotFoundError."""

from __future__ import annotations

import pytest
from support import imports

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def declared() -> dict[str, set[str]]:
    return imports.declared()


def test_the_scan_sees_lazy_and_eager_imports():
    found = {(i.module, i.name): i.eager for i in imports.third_party_imports()}
    assert found[("imgclf.model", "torch")] is True
    assert any(not eager for (_, name), eager in found.items() if name == "h5py"), "h5py is imported lazily"
    assert not any(name in ("os", "imgclf", "__future__") for _, name in found)


def test_every_import_is_declared_for_its_module(declared):
    problems = []
    for imp in imports.third_party_imports():
        dists = imports.distributions_of(imp.name)
        if not dists:
            problems.append(
                f"{imp.module}:{imp.line} imports {imp.name}, which no installed distribution provides: install "
                "it, or name its distribution in tests/support/imports.py KNOWN_DISTRIBUTIONS"
            )
            continue
        allowed = (imports.CORE, *imports.extras_of(imp.module))
        if not any(dists & declared[group] for group in allowed):
            where = sorted(group for group, names in declared.items() if dists & names and group != "all")
            problems.append(
                f"{imp.module}:{imp.line} imports {imp.name} ({', '.join(sorted(dists))}), declared in "
                f"{where or 'nothing'} but the module may use only {list(allowed)}: declare it in pyproject.toml "
                "or give the module its extra in tests/support/imports.py MODULE_EXTRAS"
            )
    assert not problems, "\n".join(problems)


def test_the_table_names_real_extras(declared):
    unknown = {m: e for m, extras in imports.MODULE_EXTRAS.items() for e in extras if e not in declared}
    assert not unknown, f"MODULE_EXTRAS names extras pyproject.toml does not have: {unknown}"


def test_all_holds_every_extra_but_those_with_venvs_of_their_own_and_dev(declared):
    """`imgclf[all]` is what the images and the host venv run; the SDK (its own venvs) and dev tools are apart."""
    for extra, names in declared.items():
        if extra not in (imports.CORE, "all", *imports.OWN_VENV_EXTRAS, "dev"):
            assert names <= declared["all"], f"imgclf[all] lacks {sorted(names - declared['all'])} of [{extra}]"
    assert "sagemaker" not in declared["all"]


def test_the_lock_pins_every_declared_package_but_those_with_venvs_of_their_own(declared):
    """docker/constraints.txt stays the exact lock for the images and CI: it pins each package pyproject names."""
    lock = imports.REPO / "docker" / "constraints.txt"
    pinned = {
        imports.normalize(line.split("==")[0])
        for line in lock.read_text().splitlines()
        if "==" in line and not line.startswith("#")
    }
    wanted = set().union(
        *(names for extra, names in declared.items() if extra not in (*imports.OWN_VENV_EXTRAS, "dev"))
    )
    assert wanted <= pinned, f"pyproject.toml declares {sorted(wanted - pinned)}, which docker/constraints.txt lacks"
