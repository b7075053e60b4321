"""SageMaker Pipelines (SDK v2): the definition SageMaker receives, the registry calls against moto, and the
whole local pipeline on Docker (train -> evaluate -> quality gate -> CreateModel / Fail), passing and failing.

What runs where (SDK 2.257's LocalPipelineSession has executors for Training, Processing, Condition, Fail,
CreateModel and Transform steps only):
  ran locally       Train (TrainingStep, train image), Evaluate (ProcessingStep, `imgclf evaluate` in the train
                    image), QualityGate (ConditionStep with JsonGet on evaluation.json), CreateModel (local
                    variant of the pass branch), QualityGateFailed (FailStep)
  definition only   Register (RegisterModel: no local executor), Debugger rules/profiler, caching
  moto              CreateModelPackageGroup, CreateModelPackage (the definition's RegisterModel arguments),
                    UpdateModelPackage (approval), ListModelPackages
Local pipelines read the property file from S3 (JsonGet -> read_s3_file), so S3 is moto_server here.
"""

from __future__ import annotations

import subprocess
import time
import urllib.request

import pytest
from support import VENV_BIN
from support.localmode import CONTAINER_HYPERPARAMETERS, SERVE_IMAGE, TRAIN_IMAGE

pytestmark = pytest.mark.localmode

BUCKET = "imgclf-pipeline-test"
GATE_PATH = "multiclass_classification_metrics.accuracy.value"


@pytest.fixture
def moto():
    """moto_server on 127.0.0.1 (S3 for the local pipeline, the SageMaker registry API)."""
    import socket

    server = VENV_BIN / "moto_server"
    if not server.exists():
        pytest.fail("moto server missing: run `bash scripts/docker_setup.sh` (moto[server] into .venv)", pytrace=False)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [str(server), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"{url}/moto-api/", timeout=1)
                break
            except OSError:
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def _args(localmode, small_sample, **extra) -> dict:
    return {
        "bucket": BUCKET,
        "workdir": str(localmode.workdir / "sagemaker-local"),
        "channels": {name: f"file://{small_sample / name}" for name in ("train", "valid", "test")},
        "hyperparameters": CONTAINER_HYPERPARAMETERS,
        "train_image": TRAIN_IMAGE,
        "serve_image": SERVE_IMAGE,
        **extra,
    }


def _find(steps, name):
    for step in steps:
        if step["Name"] == name:
            return step
        args = step.get("Arguments", {})
        found = _find(args.get("IfSteps", []) + args.get("ElseSteps", []), name)
        if found:
            return found
    return None


def test_pipeline_definition_is_train_evaluate_gate_register_or_fail(localmode, small_sample):
    result, _, _ = localmode.driver("v2_pipeline", sdk=2, args=_args(localmode, small_sample, mode="definition"))
    d = result["sagemaker"]
    assert result["names"] == ["Train", "Evaluate", "QualityGate", "Register-RegisterModel", "QualityGateFailed"]
    assert result["local_names"] == ["Train", "Evaluate", "QualityGate", "CreateModel-CreateModel", "QualityGateFailed"]
    params = {p["Name"]: p for p in d["Parameters"]}
    assert params["QualityThreshold"]["Type"] == "Float"
    assert params["TrainInstanceCount"]["Type"] == "Integer"
    assert params["ModelApprovalStatus"]["DefaultValue"] == "PendingManualApproval"
    assert params["epochs"]["DefaultValue"] == CONTAINER_HYPERPARAMETERS["epochs"]

    train = _find(d["Steps"], "Train")
    assert train["Type"] == "Training" and train["CacheConfig"] == {"Enabled": True, "ExpireAfter": "P30D"}
    targs = train["Arguments"]
    assert targs["HyperParameters"]["epochs"] == {"Get": "Parameters.epochs"}
    assert targs["ResourceConfig"]["InstanceType"] == {"Get": "Parameters.TrainInstanceType"}
    assert {c["ChannelName"] for c in targs["InputDataConfig"]} == {"train", "valid", "test"}
    assert targs["DebugRuleConfigurations"] and targs["ProfilerConfig"]  # rules as `imgclf sagemaker train`
    assert targs["AlgorithmSpecification"]["MetricDefinitions"]

    ev = _find(d["Steps"], "Evaluate")
    assert ev["Type"] == "Processing" and ev["CacheConfig"]["Enabled"]
    app = ev["Arguments"]["AppSpecification"]
    assert app["ContainerArguments"] == ["evaluate"] and app["ImageUri"] == TRAIN_IMAGE
    inputs = {i["InputName"]: i["S3Input"] for i in ev["Arguments"]["ProcessingInputs"]}
    assert inputs["model"]["S3Uri"] == {"Get": "Steps.Train.ModelArtifacts.S3ModelArtifacts"}
    assert inputs["model"]["LocalPath"] == "/opt/ml/processing/input/model"
    assert inputs["test"]["LocalPath"] == "/opt/ml/processing/input/test"
    assert ev["PropertyFiles"] == [
        {"PropertyFileName": "EvaluationReport", "OutputName": "evaluation", "FilePath": "evaluation.json"}
    ]

    gate = _find(d["Steps"], "QualityGate")
    (cond,) = gate["Arguments"]["Conditions"]
    assert cond["Type"] == "GreaterThanOrEqualTo"
    assert cond["LeftValue"]["Std:JsonGet"]["Path"] == GATE_PATH
    assert cond["RightValue"] == {"Get": "Parameters.QualityThreshold"}

    reg = _find(d["Steps"], "Register-RegisterModel")
    assert reg["Type"] == "RegisterModel"
    rargs = reg["Arguments"]
    assert rargs["ModelApprovalStatus"] == {"Get": "Parameters.ModelApprovalStatus"}
    spec = rargs["InferenceSpecification"]
    assert spec["Containers"][0]["Image"] == SERVE_IMAGE
    assert spec["Containers"][0]["ModelDataUrl"] == {"Get": "Steps.Train.ModelArtifacts.S3ModelArtifacts"}
    assert "image/jpeg" in spec["SupportedContentTypes"] and spec["SupportedResponseMIMETypes"] == ["application/json"]
    assert spec["SupportedRealtimeInferenceInstanceTypes"]
    stats = rargs["ModelMetrics"]["ModelQuality"]["Statistics"]
    assert stats["ContentType"] == "application/json" and "evaluation.json" in str(stats["S3Uri"])

    fail = _find(d["Steps"], "QualityGateFailed")
    assert fail["Type"] == "Fail" and "below the threshold" in str(fail["Arguments"]["ErrorMessage"])


def test_register_arguments_create_a_pending_version_in_moto_that_approve_approves(localmode, small_sample, moto):
    result, _, _ = localmode.driver(
        "v2_pipeline", sdk=2, args=_args(localmode, small_sample, mode="registry", endpoint=moto)
    )
    assert ":model-package/" in result["arn"]
    assert result["pending"]["ModelApprovalStatus"] == "PendingManualApproval"
    assert result["approved"]["ModelApprovalStatus"] == "Approved"
    assert result["approved"]["ApprovalDescription"] == "test: metrics checked"
    assert result["latest_approved"]["ModelPackageArn"] == result["arn"]


def test_local_pipeline_registers_a_model_above_the_gate_and_fails_below_it(
    localmode, train_image, torch_serve_image, small_sample, moto
):
    """One pipeline, two executions: threshold 0.0 (any model passes) and 1.01 (none can)."""
    started = time.monotonic()
    result, output, seconds = localmode.driver(
        "v2_pipeline",
        sdk=2,
        args=_args(localmode, small_sample, mode="run", endpoint=moto, thresholds=[0.0, 1.01]),
    )
    print(f"LOCAL PIPELINE: {seconds:.1f} s for both executions ({time.monotonic() - started:.1f} s with set-up)")
    passed, failed = result["runs"]
    for run in (passed, failed):
        print(f"  threshold {run['threshold']}: {run['status']} in {run['seconds']:.1f} s")
        ev = run["evaluation"]
        assert ev is not None, run
        group = ev["multiclass_classification_metrics"]
        assert 0.0 <= group["accuracy"]["value"] <= 1.0
        assert {"balanced_accuracy", "macro_f1", "weighted_f1", "confusion_matrix"} <= set(group)
        assert ev["dataset"]["item_count"] == 50  # 5 test images x 10 classes (small_sample)
        assert sum(sum(row.values()) for row in group["confusion_matrix"].values()) == 50
        assert set(ev["report"]["per_class"]) == {str(i) for i in range(10)}

    steps = {s["StepName"]: s for s in passed["steps"]}
    assert passed["status"] == "Succeeded", passed
    assert steps["QualityGate"]["Metadata"]["Condition"]["Outcome"] in (True, "True", "true")
    assert steps["CreateModel-CreateModel"]["StepStatus"] == "Succeeded"
    assert "QualityGateFailed" not in steps

    steps = {s["StepName"]: s for s in failed["steps"]}
    assert failed["status"] == "Failed", failed
    assert steps["QualityGate"]["Metadata"]["Condition"]["Outcome"] in (False, "False", "false")
    assert steps["QualityGateFailed"]["StepStatus"] == "Failed"
    assert "below the threshold 1.01" in steps["QualityGateFailed"]["FailureReason"]
    assert "CreateModel-CreateModel" not in steps
