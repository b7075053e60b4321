"""The model server's configuration: MMS properties, the gated main class, artifact check (no process started)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from imgclf.errors import UserError
from imgclf.serving import environment, server
from imgclf.serving.environment import ServerSettings

pytestmark = pytest.mark.unit


def settings(**kw):
    base = dict(
        port=8080,
        workers=2,
        workers_from_env=False,
        timeout_s=60,
        startup_timeout_s=600,
        max_payload_mb=6,
        batch_size=4,
        max_batch_delay_ms=20,
        vmargs="-Xmx1g",
        multi_model=False,
        gpus=0,
    )
    return ServerSettings(**{**base, **kw})


def test_properties_carry_port_workers_payload_and_our_handler(tmp_path):
    props = server.mms_properties(settings(host="127.0.0.1"), "/opt/ml", tmp_path)
    lines = dict(line.split("=", 1) for line in props.splitlines())
    assert lines["inference_address"] == "http://127.0.0.1:8080"
    # single model: the management API is loopback-only (and the gated front-end does not even bind it)
    assert lines["management_address"] == "http://127.0.0.1:8081"
    mme = dict(line.split("=", 1) for line in server.mms_properties(settings(multi_model=True), "/", None).splitlines())
    assert mme["management_address"] == mme["inference_address"]  # SageMaker loads models through the public port
    assert lines["default_workers_per_model"] == "2"
    assert lines["max_request_size"] == str(6 * 1024 * 1024)
    assert lines["default_service_handler"] == "imgclf.serving.handler_service"
    assert lines["plugins_path"] == str(tmp_path)
    assert lines["decode_input_request"] == "false"
    assert lines["default_response_timeout_seconds"] == "60" and lines["default_response_timeout"] == "1"


def test_command_uses_the_gated_main_with_private_tmp_and_batching(tmp_path, artifact_dir):
    jar = environment.find_mms_jar()
    assert jar is not None, "src/imgclf/serving/imgclf-mms.jar is missing: run docker/mms/build_jar.sh"
    cmd, env = server.build_command(settings(host="127.0.0.1", model_dir=str(artifact_dir), mms_jar=jar), tmp_path)
    assert server.GATED_MAIN in cmd
    assert f"-Djava.io.tmpdir={tmp_path}" in cmd and env["TMPDIR"] == str(tmp_path)
    assert "-Dimgclf.batch_size=4" in cmd and f"-Dimgclf.model=model={artifact_dir.name}" in cmd
    assert (tmp_path / "mms.properties").is_file() and (tmp_path / "plugins" / jar.name).is_file()


def test_multi_model_command_loads_no_model_at_startup(tmp_path):
    jar = environment.find_mms_jar()
    cmd, _ = server.build_command(settings(multi_model=True, model_dir=str(tmp_path), mms_jar=jar), tmp_path)
    assert not any(c.startswith("-Dimgclf.model=") for c in cmd)


def test_missing_artifact_is_a_user_error_naming_the_files(tmp_path):
    with pytest.raises(UserError, match="model.pt"):
        server.check_artifact(str(tmp_path))


def test_workers_get_their_settings_through_the_child_environment_only(tmp_path, artifact_dir):
    import os

    from imgclf.serving.environment import HandlerSettings
    from imgclf.serving.limits import RequestLimits

    before = dict(os.environ)
    limits = RequestLimits(max_aspect_ratio=2.5)
    handler = HandlerSettings(default_accept="application/x-npy", top_k=2, limits=limits, workers=2)
    _, env = server.build_command(settings(model_dir=str(artifact_dir), handler=handler), tmp_path)
    to_serve_stdout = replace(handler.metrics, destination=f"/proc/{os.getpid()}/fd/1")
    assert HandlerSettings.from_env(env) == replace(handler, metrics=to_serve_stdout)
    assert dict(os.environ) == before


def test_workers_write_request_metrics_to_the_servers_stdout_unless_told_otherwise(tmp_path, artifact_dir):
    """Bare EMF lines in the container's log: the workers' own stdout is re-logged by MMS with a prefix."""
    import os

    from imgclf.serving.environment import HandlerSettings, request_metrics_settings

    def worker_metrics(environ):
        handler = HandlerSettings.from_env(environ)
        _, env = server.build_command(settings(model_dir=str(artifact_dir), handler=handler), tmp_path)
        return request_metrics_settings(env)

    assert worker_metrics({}).destination == f"/proc/{os.getpid()}/fd/1"
    assert os.path.exists(worker_metrics({}).destination)
    assert worker_metrics({"IMGCLF_REQUEST_METRICS_TO": "/tmp/emf.log"}).destination == "/tmp/emf.log"
    off = worker_metrics({"IMGCLF_REQUEST_METRICS": "off"})
    assert not off.enabled and off.destination == ""
    given = worker_metrics({"IMGCLF_ENDPOINT_NAME": "ep", "IMGCLF_ENDPOINT_VARIANT": "blue"})
    assert (given.endpoint_name, given.variant) == ("ep", "blue")  # what `imgclf sagemaker deploy` sets
