"""EMF request metrics: the line is what CloudWatch's Embedded Metric Format specification asks for, the handler
writes one per MMS batch with the right counts, and IMGCLF_REQUEST_METRICS=off writes nothing."""

from __future__ import annotations

import io
import json

import pytest
from support.emf import assert_valid_emf
from support.handler_calls import call, image_bytes

from imgclf.serving import request_metrics
from imgclf.serving.environment import RequestMetricsSettings, request_metrics_settings
from imgclf.serving.request_metrics import RequestMetrics, emf_record

pytestmark = pytest.mark.unit

SETTINGS = RequestMetricsSettings(enabled=True, destination="", endpoint_name="ep", variant="AllTraffic")
TIMINGS = {"DecodeMs": 1.5, "ForwardMs": 20.25, "EncodeMs": 0.125, "TotalMs": 22.0}


def test_emf_line_follows_the_specification_and_holds_every_metric():
    record = emf_record(
        endpoint_name="ep", variant="AllTraffic", timings_ms=TIMINGS, batch_size=3, images=4, statuses=[200, 400, 200]
    )
    assert_valid_emf(json.loads(json.dumps(record)))
    assert record["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "imgclf"
    assert record["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["EndpointName", "EndpointVariant"]]
    assert {k: record[k] for k in TIMINGS} == TIMINGS
    assert (record["BatchSize"], record["Images"]) == (3, 4)
    assert (record["Status2xx"], record["Status4xx"], record["Status5xx"]) == (2, 1, 0)


def test_a_multi_model_endpoint_adds_the_model_name_dimension():
    record = emf_record(endpoint_name="ep", variant="v", timings_ms=TIMINGS, batch_size=1, images=1,
                        statuses=[500], model_name="resnet-7f3a")  # fmt: skip
    assert_valid_emf(record)
    assert record["_aws"]["CloudWatchMetrics"][0]["Dimensions"][1] == ["EndpointName", "EndpointVariant", "ModelName"]
    single = emf_record(endpoint_name="ep", variant="v", timings_ms=TIMINGS, batch_size=1, images=1, statuses=[200],
                        model_name=request_metrics.SINGLE_MODEL_NAME)  # fmt: skip
    assert single["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["EndpointName", "EndpointVariant"]]


def test_single_model_name_is_the_one_the_server_registers():
    from imgclf.serving import server

    assert request_metrics.SINGLE_MODEL_NAME == server.MODEL_NAME


def test_emitter_writes_one_line_per_call_and_nothing_when_off():
    out = io.StringIO()
    RequestMetrics(SETTINGS, stream=out).emit(timings_ms=TIMINGS, batch_size=1, images=1, statuses=[200])
    (line,) = out.getvalue().splitlines()
    assert_valid_emf(json.loads(line))
    off = io.StringIO()
    RequestMetrics(RequestMetricsSettings(False, "", "ep", "v"), stream=off).emit(
        timings_ms=TIMINGS, batch_size=1, images=1, statuses=[200]
    )
    assert off.getvalue() == ""


def test_emitter_writes_to_the_configured_destination_and_falls_back_to_stdout(tmp_path, capsys):
    target = tmp_path / "metrics.log"
    m = RequestMetrics(RequestMetricsSettings(True, str(target), "ep", "v"))
    for _ in range(2):
        m.emit(timings_ms=TIMINGS, batch_size=1, images=1, statuses=[200])
    m.close()
    assert [json.loads(x)["EndpointName"] for x in target.read_text().splitlines()] == ["ep", "ep"]
    bad = RequestMetrics(RequestMetricsSettings(True, str(tmp_path / "no" / "such" / "dir"), "ep", "v"))
    bad.emit(timings_ms=TIMINGS, batch_size=1, images=1, statuses=[200])
    assert_valid_emf(json.loads(capsys.readouterr().out.splitlines()[-1]))


def test_a_failing_stream_never_fails_the_request():
    class Broken(io.StringIO):
        def write(self, _):
            raise OSError("disk full")

    RequestMetrics(SETTINGS, stream=Broken()).emit(timings_ms=TIMINGS, batch_size=1, images=1, statuses=[200])


@pytest.mark.parametrize("raw, enabled", [(None, True), ("on", True), ("off", False), ("0", False), ("true", True)])
def test_the_switch(monkeypatch, raw, enabled):
    if raw is None:
        monkeypatch.delenv("IMGCLF_REQUEST_METRICS", raising=False)
    else:
        monkeypatch.setenv("IMGCLF_REQUEST_METRICS", raw)
    assert request_metrics_settings().enabled is enabled


def test_a_typo_in_the_switch_is_an_error(monkeypatch):
    monkeypatch.setenv("IMGCLF_REQUEST_METRICS", "of")
    with pytest.raises(ValueError, match="on or off"):
        request_metrics_settings()


def test_handler_writes_one_line_per_batch_with_the_batch_counts(handler):
    out = io.StringIO()
    saved = handler.request_metrics
    handler.request_metrics = RequestMetrics(SETTINGS, stream=out)
    try:
        answers = call(handler, [(image_bytes(), {"content-type": "image/png"}),
                                 (b"not an image", {"content-type": "image/png"})])  # fmt: skip
    finally:
        handler.request_metrics = saved
    assert [a[0] for a in answers] == [200, 400]
    (line,) = out.getvalue().splitlines()
    record = json.loads(line)
    assert_valid_emf(record)
    assert (record["BatchSize"], record["Images"], record["Status2xx"], record["Status4xx"]) == (2, 1, 1, 1)
    assert record["ForwardMs"] > 0 and record["TotalMs"] >= record["DecodeMs"] + record["ForwardMs"]
