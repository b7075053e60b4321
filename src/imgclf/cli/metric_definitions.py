"""`imgclf metric-definitions`: the JSON to pass as an Estimator's metric_definitions."""

from __future__ import annotations

import argparse

from imgclf.metrics import to_json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace) -> int:
    print(to_json())
    return 0
