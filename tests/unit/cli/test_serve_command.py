"""`imgclf serve`'s refusals: exit status 2 and a clear message before any server starts."""

from __future__ import annotations

import os

import pytest

from imgclf import cli

pytestmark = pytest.mark.unit


def test_a_directory_without_an_artifact_is_refused(tmp_path, capsys):
    assert cli.main(["serve", "--model-dir", str(tmp_path), "--workers", "1"]) == 2
    assert "model.pt" in capsys.readouterr().err


def test_a_bad_flag_is_refused_and_nothing_is_written_to_the_environment(tmp_path, capsys):
    before = dict(os.environ)
    assert cli.main(["serve", "--model-dir", str(tmp_path), "--batch-size", "0"]) == 2
    assert "--batch-size 0 must be >= 1" in capsys.readouterr().err
    assert dict(os.environ) == before
