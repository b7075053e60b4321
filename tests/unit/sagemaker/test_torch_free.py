"""The SDK side runs in venvs without torch: importing imgclf.sagemaker (every module) must not import it."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import pytest

import imgclf.sagemaker

pytestmark = pytest.mark.unit

MODULES = ["imgclf.sagemaker"] + [f"imgclf.sagemaker.{m.name}" for m in pkgutil.iter_modules(imgclf.sagemaker.__path__)]


def test_the_package_has_the_four_modules():
    assert set(MODULES) >= {f"imgclf.sagemaker.{m}" for m in ("target", "jobs", "sdk_v2", "sdk_v3")}


def test_importing_imgclf_sagemaker_and_its_command_in_a_fresh_python_does_not_import_torch():
    code = (
        "import importlib, sys\n"
        f"for name in {[*MODULES, 'imgclf.cli.sagemaker']!r}:\n"
        "    importlib.import_module(name)\n"
        "heavy = sorted(m for m in ('torch', 'torchvision', 'smdebug') if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"imported: {out.stdout.strip()}"
