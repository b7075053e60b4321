"""One CloudWatch Embedded Metric Format (EMF) line per request batch: CloudWatch Logs turns it into metrics with
no agent and no PutMetricData call.

The line (one JSON object, https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/
CloudWatch_Embedded_Metric_Format_Specification.html):

    {"_aws": {"Timestamp": <ms>, "CloudWatchMetrics": [{"Namespace": "imgclf",
              "Dimensions": [["EndpointName", "EndpointVariant"]], "Metrics": [{"Name": "DecodeMs", ...}]}]},
     "EndpointName": "...", "EndpointVariant": "...", "ModelName": "...",
     "DecodeMs": 3.1, "ForwardMs": 24.0, "EncodeMs": 0.2, "TotalMs": 27.5,
     "BatchSize": 1, "Images": 1, "Status2xx": 1, "Status4xx": 0, "Status5xx": 0}

DecodeMs is decode + resize/normalise (the handler's preprocess), ForwardMs the forward pass, EncodeMs the answer
encoding, TotalMs the whole batch in the worker. BatchSize counts requests in the MMS batch, Images the images
they held. A multi-model endpoint adds the dimension set [EndpointName, EndpointVariant, ModelName].

Where the line goes (`IMGCLF_REQUEST_METRICS_TO`): by default the worker's stdout. MMS logs a worker's stdout
lines with its own prefix ("<time> [INFO ] W-9000-model-stdout ...WorkerLifeCycle - {...}"), and CloudWatch only
extracts EMF from log events that are JSON objects, so in a container point it at the container's stdout
(`/proc/1/fd/1`): each line is one write() under PIPE_BUF, so lines from several workers never interleave.
`IMGCLF_REQUEST_METRICS=off` turns it off. Settings: imgclf.serving.environment.request_metrics_settings.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Iterable
from typing import TextIO

from imgclf.serving.environment import RequestMetricsSettings, request_metrics_settings

log = logging.getLogger(__name__)

NAMESPACE = "imgclf"
SINGLE_MODEL_NAME = "model"  # the name `imgclf serve` registers a single model under (serving/server.py MODEL_NAME)
BASE_DIMENSIONS = ["EndpointName", "EndpointVariant"]
TIMINGS = ("DecodeMs", "ForwardMs", "EncodeMs", "TotalMs")
COUNTS = ("BatchSize", "Images", "Status2xx", "Status4xx", "Status5xx")


def metric_directive(dimension_sets: list[list[str]]) -> dict:
    return {
        "Namespace": NAMESPACE,
        "Dimensions": dimension_sets,
        "Metrics": [{"Name": n, "Unit": "Milliseconds"} for n in TIMINGS]
        + [{"Name": n, "Unit": "Count"} for n in COUNTS],
    }


def status_counts(statuses: Iterable[int]) -> dict[str, int]:
    counts = {"Status2xx": 0, "Status4xx": 0, "Status5xx": 0}
    for status in statuses:
        key = f"Status{status // 100}xx"
        if key in counts:
            counts[key] += 1
    return counts


def emf_record(
    *,
    endpoint_name: str,
    variant: str,
    timings_ms: dict[str, float],
    batch_size: int,
    images: int,
    statuses: Iterable[int],
    model_name: str | None = None,
    timestamp_ms: int | None = None,
) -> dict:
    """The EMF object for one batch (every metric value a number, every dimension value a string)."""
    dimension_sets = [BASE_DIMENSIONS]
    record: dict = {"EndpointName": endpoint_name, "EndpointVariant": variant}
    if model_name:
        record["ModelName"] = model_name
        if model_name != SINGLE_MODEL_NAME:
            dimension_sets = [BASE_DIMENSIONS, [*BASE_DIMENSIONS, "ModelName"]]
    record["_aws"] = {
        "Timestamp": int(time.time() * 1000) if timestamp_ms is None else timestamp_ms,
        "CloudWatchMetrics": [metric_directive(dimension_sets)],
    }
    for name in TIMINGS:
        record[name] = round(float(timings_ms.get(name, 0.0)), 3)
    record.update(BatchSize=batch_size, Images=images, **status_counts(statuses))
    return record


class RequestMetrics:
    """The worker's emitter: `emit(...)` writes one line; never raises (a metrics failure must not fail a request)."""

    def __init__(self, settings: RequestMetricsSettings | None = None, stream: TextIO | None = None) -> None:
        self.settings = settings or request_metrics_settings()
        self.enabled = self.settings.enabled
        self._fd: int | None = None
        self._stream = stream
        if self.enabled and stream is None and self.settings.destination:
            try:
                self._fd = os.open(self.settings.destination, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            except OSError as exc:
                log.warning("Request metrics: cannot open %s (%s); writing to stdout", self.settings.destination, exc)
        self._failed = False

    def emit(
        self,
        *,
        timings_ms: dict[str, float],
        batch_size: int,
        images: int,
        statuses: Iterable[int],
        model_name: str | None = None,
    ) -> None:
        if not self.enabled:
            return
        try:
            line = json.dumps(
                emf_record(
                    endpoint_name=self.settings.endpoint_name,
                    variant=self.settings.variant,
                    timings_ms=timings_ms,
                    batch_size=batch_size,
                    images=images,
                    statuses=statuses,
                    model_name=model_name,
                ),
                separators=(",", ":"),
            )
            if self._fd is not None:
                os.write(self._fd, (line + "\n").encode())  # one write: atomic on a pipe below PIPE_BUF
            else:
                stream = self._stream or sys.stdout
                stream.write(line + "\n")
                stream.flush()
        except Exception:  # noqa: BLE001 - log once, keep answering
            if not self._failed:
                self._failed = True
                log.exception("Request metrics: writing the EMF line failed (further failures not logged)")

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
