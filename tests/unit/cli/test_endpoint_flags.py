"""The production endpoint flags of `imgclf sagemaker deploy` (imgclf.cli.endpoint_flags): parsed into the options,
the combinations SageMaker cannot run refused before any AWS call."""

from __future__ import annotations

import argparse

import pytest

from imgclf.cli import endpoint_flags
from imgclf.errors import UserError

pytestmark = pytest.mark.unit

SNS = "arn:aws:sns:us-east-1:123456789012:imgclf-done"


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    endpoint_flags.add_endpoint_arguments(parser)
    return parser.parse_args(list(argv))


def test_flags_become_options():
    opts = endpoint_flags.options_from_args(
        _args("--autoscale", "1:3", "--async-output", "s3://b/o", "--data-capture", "s3://b/c", "--capture-percent",
              "100", "--dashboard"),
        "ml.m5.xlarge",
    )  # fmt: skip
    assert opts.autoscaling.max_capacity == 3 and opts.autoscaling.target_invocations == 2472
    assert opts.async_inference.output_path == "s3://b/o" and opts.data_capture.sampling_percent == 100
    assert opts.serverless is None and opts.dashboard


@pytest.mark.parametrize(
    "argv, match",
    [
        (["--serverless", "2048", "--autoscale", "1:2"], "scales by itself"),
        (["--serverless", "2048", "--async-output", "s3://b/o"], "Choose one"),
        (["--async-success-topic", SNS], "need --async-output"),
    ],
)
def test_flag_combinations_serverless_cannot_do_are_refused(argv, match):
    with pytest.raises(UserError, match=match):
        endpoint_flags.options_from_args(_args(*argv), None)


def test_local_mode_refuses_the_options_it_cannot_run():
    endpoint_flags.refuse_in_local_mode(endpoint_flags.options_from_args(_args(), "local"))
    with pytest.raises(UserError, match="local mode does not run --serverless, --dashboard"):
        options = endpoint_flags.options_from_args(_args("--serverless", "2048", "--dashboard"), None)
        endpoint_flags.refuse_in_local_mode(options)
