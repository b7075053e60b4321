"""The SageMaker Model Registry side of a pipeline's output: approve a model package, deploy one (torch-free).

The pipeline (imgclf.sagemaker.pipeline) registers each model that passes its quality gate as a new version in a
Model Package Group, PendingManualApproval by default. A person (or CI) looks at the version's metrics (the
evaluation.json attached as ModelMetrics) and approves it (`approve`, UpdateModelPackage), then deploys it
(`deploy_model_package`: SDK v2's public `ModelPackage(...).deploy()`, CreateModel + endpoint config +
endpoint). boto3 and the SDK are imported inside the functions: neither is a dependency of imgclf.
"""

from __future__ import annotations

from typing import Any

from imgclf.errors import UserError
from imgclf.sagemaker.jobs import JPEG
from imgclf.sagemaker.target import Target

APPROVED = "Approved"
REJECTED = "Rejected"
PENDING = "PendingManualApproval"


def sagemaker_client(target: Target, endpoint_url: str | None = None):
    import boto3

    return boto3.Session(region_name=target.region).client("sagemaker", endpoint_url=endpoint_url)


def set_approval(client, model_package_arn: str, status: str = APPROVED, description: str | None = None) -> dict:
    """UpdateModelPackage(ModelApprovalStatus=status); returns the package as DescribeModelPackage shows it."""
    if status not in (APPROVED, REJECTED, PENDING):
        raise UserError(f"Approval status must be {APPROVED}, {REJECTED} or {PENDING}; got {status!r}.")
    if ":model-package/" not in model_package_arn:
        raise UserError(f"{model_package_arn!r} is not a model package ARN (arn:aws:sagemaker:...:model-package/...).")
    request: dict[str, Any] = {"ModelPackageArn": model_package_arn, "ModelApprovalStatus": status}
    if description:
        request["ApprovalDescription"] = description
    client.update_model_package(**request)
    return client.describe_model_package(ModelPackageName=model_package_arn)


def latest_version(client, group: str, status: str | None = None) -> dict | None:
    """The newest version in a Model Package Group (optionally only those with an approval status), or None."""
    request: dict[str, Any] = {
        "ModelPackageGroupName": group,
        "SortBy": "CreationTime",
        "SortOrder": "Descending",
        "MaxResults": 1,
    }
    if status:
        request["ModelApprovalStatus"] = status
    found = client.list_model_packages(**request).get("ModelPackageSummaryList", [])
    return found[0] if found else None


def deploy_model_package(
    target: Target,
    model_package_arn: str,
    *,
    instance_type: str = "ml.m5.large",
    instance_count: int = 1,
    endpoint_name: str | None = None,
    sagemaker_session=None,
):
    """A real-time endpoint from an approved model package (SDK v2 `ModelPackage.deploy`); returns a Predictor
    that sends image/jpeg and reads JSON."""
    from imgclf.sagemaker.sdk_v2 import require_v2, session

    require_v2("Deploying a model package")
    from sagemaker.deserializers import JSONDeserializer
    from sagemaker.model import ModelPackage
    from sagemaker.predictor import Predictor
    from sagemaker.serializers import IdentitySerializer

    sess = sagemaker_session or session(target)
    status = sess.sagemaker_client.describe_model_package(ModelPackageName=model_package_arn)["ModelApprovalStatus"]
    if status != APPROVED:
        raise UserError(
            f"{model_package_arn} is {status}: approve it first (`imgclf sagemaker approve {model_package_arn}`)."
        )
    package = ModelPackage(
        role=target.role, model_package_arn=model_package_arn, sagemaker_session=sess, predictor_cls=Predictor
    )
    return package.deploy(
        initial_instance_count=instance_count,
        instance_type=instance_type,
        endpoint_name=endpoint_name,
        serializer=IdentitySerializer(JPEG),
        deserializer=JSONDeserializer(),
    )
