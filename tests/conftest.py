"""Fixtures shared by every tier; the plain helpers live in the support package (tests/support/)."""

from __future__ import annotations

from pathlib import Path

import pytest

from imgclf.sample_data import write_sample_data


@pytest.fixture(scope="session")
def sample_data(tmp_path_factory) -> Path:
    """The embedded digits as ImageFolder train/valid/test (read-only for tests: copy before changing)."""
    root = tmp_path_factory.mktemp("sample")
    write_sample_data(root)
    return root
