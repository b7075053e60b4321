"""`imgclf tune`'s refusals: exit status 2 and a message naming the flag, before any trial runs."""

from __future__ import annotations

import pytest

from imgclf import cli

pytestmark = pytest.mark.unit


def test_a_hyperparameter_cannot_be_both_fixed_and_tuned(sample_data, tmp_path, capsys):
    rc = cli.main(["tune", "--data", str(sample_data), "--trials", "1", "--out", str(tmp_path), "--lr", "0.01"])
    assert rc == 2 and "both fixed" in capsys.readouterr().err


def test_tuning_a_parameter_without_a_range_is_refused(sample_data, tmp_path, capsys):
    rc = cli.main(["tune", "--data", str(sample_data), "--trials", "1", "--out", str(tmp_path), "--tune", "image-size"])
    assert rc == 2 and "no tuning range" in capsys.readouterr().err


def test_data_that_is_not_a_directory_is_refused(tmp_path, capsys):
    # --data resolves as `imgclf train --data` does (channels.resolve_channels): DATA/train, or DATA as the train
    # channel; a path that is neither is refused before a study is created.
    rc = cli.main(["tune", "--data", str(tmp_path / "missing"), "--trials", "1", "--out", str(tmp_path / "o")])
    assert rc == 2 and "--data" in capsys.readouterr().err and not (tmp_path / "o").exists()
