"""CloudWatch Embedded Metric Format: the specification's rules for one log event, the one copy (the request
metrics' unit tests and the serve container's log check use it).
https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html
"""

from __future__ import annotations

import json


def assert_valid_emf(obj: dict) -> None:
    """The EMF specification's rules for one log event (a JSON object)."""
    aws = obj["_aws"]
    assert isinstance(aws["Timestamp"], int) and aws["Timestamp"] > 1_600_000_000_000  # epoch milliseconds
    directives = aws["CloudWatchMetrics"]
    assert isinstance(directives, list) and directives
    for d in directives:
        assert isinstance(d["Namespace"], str) and 1 <= len(d["Namespace"]) <= 255
        assert isinstance(d["Dimensions"], list)
        for dimension_set in d["Dimensions"]:
            assert len(dimension_set) <= 30
            for key in dimension_set:
                assert isinstance(obj[key], str), key  # each dimension names a top-level string member
        assert 1 <= len(d["Metrics"]) <= 100
        for metric in d["Metrics"]:
            assert set(metric) <= {"Name", "Unit", "StorageResolution"}
            assert metric["Unit"] in {"Milliseconds", "Count"}
            value = obj[metric["Name"]]  # each metric names a top-level number
            assert isinstance(value, int | float) and not isinstance(value, bool)


def emf_lines(log: str) -> list[dict]:
    """Every log line that is an EMF event: a bare JSON object with an `_aws` member (no prefix before it, as
    CloudWatch Logs needs), each checked against the specification."""
    found = []
    for line in log.splitlines():
        if not line.startswith("{"):
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict) and "_aws" in obj:
            assert_valid_emf(obj)
            found.append(obj)
    return found
