"""Whether the SageMaker Python SDK is installed in the Python running the tests (the main venv has none)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version


def sdk_installed() -> bool:
    """By distribution, not find_spec: tests/unit/sagemaker, on sys.path's parent, is itself a `sagemaker` namespace."""
    try:
        version("sagemaker")
    except PackageNotFoundError:
        return False
    return True
