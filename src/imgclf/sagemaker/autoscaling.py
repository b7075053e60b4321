"""Autoscaling of an endpoint variant: Application Auto Scaling's scalable target
(endpoint/NAME/variant/VARIANT, sagemaker:variant:DesiredInstanceCount) and a target-tracking policy on
SageMakerVariantInvocationsPerInstance, which counts invocations per instance per MINUTE.

`scalable_target_request` / `scaling_policy_request` are the exact request dicts (validated against botocore's
model in the unit tests); `apply_autoscaling` / `remove_autoscaling` send them (torch-free; boto3 clients passed in).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from imgclf.errors import UserError
from imgclf.sagemaker.aws_errors import aws_call

DEFAULT_VARIANT = "AllTraffic"

# Default target, from benchmarks/RESULTS.md: `imgclf serve` (ResNet-18, 224 px, 2 workers) answered 41.3 req/s at
# 8 clients on 2 vCPUs, i.e. ~20 req/s per vCPU. AWS's rule for the target: peak req/s x 0.5 (headroom while new
# instances start) x 60 (the metric is per minute). Other models or GPU instances: measure, pass the target.
MEASURED_RPS_PER_VCPU = 20.6
TARGET_SAFETY_FACTOR = 0.5
DEFAULT_SCALE_IN_COOLDOWN_S = 300  # scale in slowly: a new instance takes minutes to come up
DEFAULT_SCALE_OUT_COOLDOWN_S = 60

SCALING_NAMESPACE = "sagemaker"
SCALABLE_DIMENSION = "sagemaker:variant:DesiredInstanceCount"
SCALING_METRIC = "SageMakerVariantInvocationsPerInstance"


def instance_vcpus(instance_type: str) -> int | None:
    """vCPUs of an ml.* instance from its size name (large 2, xlarge 4, Nxlarge 4N); None when unknown."""
    size = instance_type.rsplit(".", 1)[-1]
    if size == "large":
        return 2
    if size == "xlarge":
        return 4
    match = re.fullmatch(r"(\d+)xlarge", size)
    return 4 * int(match.group(1)) if match else None


def default_target_invocations(instance_type: str) -> int:
    """Invocations per instance per minute to aim for (see MEASURED_RPS_PER_VCPU)."""
    vcpus = instance_vcpus(instance_type) or 2
    return max(1, round(MEASURED_RPS_PER_VCPU * vcpus * TARGET_SAFETY_FACTOR * 60))


@dataclass(frozen=True)
class Autoscaling:
    min_capacity: int
    max_capacity: int
    target_invocations: int
    scale_in_cooldown_s: int = DEFAULT_SCALE_IN_COOLDOWN_S
    scale_out_cooldown_s: int = DEFAULT_SCALE_OUT_COOLDOWN_S

    def __post_init__(self) -> None:
        if not 1 <= self.min_capacity <= self.max_capacity:
            raise UserError(f"--autoscale MIN:MAX needs 1 <= MIN <= MAX, got {self.min_capacity}:{self.max_capacity}.")
        if self.target_invocations < 1:
            raise UserError("--target-invocations (per instance per minute) must be at least 1.")
        if self.scale_in_cooldown_s < 0 or self.scale_out_cooldown_s < 0:
            raise UserError("Cooldowns are seconds >= 0.")


def parse_autoscale(
    spec: str,
    *,
    instance_type: str,
    target_invocations: int | None = None,
    scale_in_cooldown_s: int = DEFAULT_SCALE_IN_COOLDOWN_S,
    scale_out_cooldown_s: int = DEFAULT_SCALE_OUT_COOLDOWN_S,
) -> Autoscaling:
    """`--autoscale MIN:MAX` (or just MAX, min 1) and its companions."""
    parts = spec.split(":")
    try:
        low, high = (1, int(parts[0])) if len(parts) == 1 else (int(parts[0]), int(parts[1]))
    except (ValueError, IndexError):
        raise UserError(f"--autoscale takes MIN:MAX instance counts (e.g. 1:4), got {spec!r}.") from None
    if len(parts) > 2:
        raise UserError(f"--autoscale takes MIN:MAX instance counts (e.g. 1:4), got {spec!r}.")
    target = target_invocations if target_invocations is not None else default_target_invocations(instance_type)
    return Autoscaling(low, high, target, scale_in_cooldown_s, scale_out_cooldown_s)


def resource_id(endpoint_name: str, variant: str = DEFAULT_VARIANT) -> str:
    return f"endpoint/{endpoint_name}/variant/{variant}"


def policy_name(endpoint_name: str, variant: str = DEFAULT_VARIANT) -> str:
    return f"imgclf-{endpoint_name}-{variant}-invocations"[:256]


def scalable_target_request(endpoint_name: str, scaling: Autoscaling, variant: str = DEFAULT_VARIANT) -> dict:
    """Application Auto Scaling RegisterScalableTarget."""
    return {
        "ServiceNamespace": SCALING_NAMESPACE,
        "ResourceId": resource_id(endpoint_name, variant),
        "ScalableDimension": SCALABLE_DIMENSION,
        "MinCapacity": scaling.min_capacity,
        "MaxCapacity": scaling.max_capacity,
    }


def scaling_policy_request(endpoint_name: str, scaling: Autoscaling, variant: str = DEFAULT_VARIANT) -> dict:
    """Application Auto Scaling PutScalingPolicy: target tracking on invocations per instance (per minute)."""
    return {
        "PolicyName": policy_name(endpoint_name, variant),
        "ServiceNamespace": SCALING_NAMESPACE,
        "ResourceId": resource_id(endpoint_name, variant),
        "ScalableDimension": SCALABLE_DIMENSION,
        "PolicyType": "TargetTrackingScaling",
        "TargetTrackingScalingPolicyConfiguration": {
            "TargetValue": float(scaling.target_invocations),
            "PredefinedMetricSpecification": {"PredefinedMetricType": SCALING_METRIC},
            "ScaleInCooldown": scaling.scale_in_cooldown_s,
            "ScaleOutCooldown": scaling.scale_out_cooldown_s,
        },
    }


def describe_in_service(sagemaker_client, endpoint_name: str) -> dict:
    """DescribeEndpoint; UserError unless the endpoint exists and is InService (autoscaling needs both)."""
    described = aws_call(
        f"DescribeEndpoint {endpoint_name}", sagemaker_client.describe_endpoint, EndpointName=endpoint_name
    )
    if described.get("EndpointStatus") != "InService":
        raise UserError(
            f"Endpoint {endpoint_name} is {described.get('EndpointStatus')}; autoscaling needs it InService."
        )
    return described


def endpoint_variants(sagemaker_client, endpoint_name: str) -> list[dict]:
    """The live endpoint's variants; UserError unless it exists and is InService (autoscaling needs both)."""
    return describe_in_service(sagemaker_client, endpoint_name).get("ProductionVariants", [])


def variant_instance_type(sagemaker_client, endpoint_name: str, variant: str = DEFAULT_VARIANT) -> str:
    """The instance type of a live endpoint's variant (from its endpoint config), for the default target.

    UserError when the endpoint is not InService, has no such variant, or the variant is serverless (it scales
    by itself: there are no instances to count).
    """
    described = describe_in_service(sagemaker_client, endpoint_name)
    names = [v["VariantName"] for v in described.get("ProductionVariants", [])]
    if variant not in names:
        raise UserError(f"Endpoint {endpoint_name} has no variant {variant!r} (it has: {', '.join(names)}).")
    config_name = described["EndpointConfigName"]
    config = aws_call(
        f"DescribeEndpointConfig {config_name}",
        sagemaker_client.describe_endpoint_config,
        EndpointConfigName=config_name,
    )
    (spec,) = [v for v in config["ProductionVariants"] if v["VariantName"] == variant]
    if "ServerlessConfig" in spec or not spec.get("InstanceType"):
        raise UserError(
            f"Variant {variant} of {endpoint_name} is serverless: it scales by itself up to its MaxConcurrency; "
            "there is no instance count to autoscale."
        )
    return spec["InstanceType"]


def apply_autoscaling(autoscaling_client, endpoint_name: str, scaling: Autoscaling, variant: str = DEFAULT_VARIANT):
    """Register (or update) the variant's scalable target, then put (or replace) the target-tracking policy."""
    target = scalable_target_request(endpoint_name, scaling, variant)
    aws_call("RegisterScalableTarget", autoscaling_client.register_scalable_target, **target)
    policy = scaling_policy_request(endpoint_name, scaling, variant)
    return aws_call("PutScalingPolicy", autoscaling_client.put_scaling_policy, **policy)


def remove_autoscaling(autoscaling_client, endpoint_name: str, variant: str = DEFAULT_VARIANT) -> bool:
    """Delete every policy on the variant and deregister it; False when nothing was registered.

    Looked up first rather than deleting blind: AWS answers a missing one with ObjectNotFoundException, moto with
    ValidationException, and the policy may have been made by hand under another name.
    """
    ids = {
        "ServiceNamespace": SCALING_NAMESPACE,
        "ResourceId": resource_id(endpoint_name, variant),
        "ScalableDimension": SCALABLE_DIMENSION,
    }
    policies = aws_call(
        "DescribeScalingPolicies",
        autoscaling_client.describe_scaling_policies,
        ServiceNamespace=SCALING_NAMESPACE,
        ResourceId=ids["ResourceId"],
        ScalableDimension=SCALABLE_DIMENSION,
    )["ScalingPolicies"]
    for policy in policies:
        delete = autoscaling_client.delete_scaling_policy
        aws_call("DeleteScalingPolicy", delete, PolicyName=policy["PolicyName"], **ids)
    targets = aws_call(
        "DescribeScalableTargets",
        autoscaling_client.describe_scalable_targets,
        ServiceNamespace=SCALING_NAMESPACE,
        ResourceIds=[ids["ResourceId"]],
        ScalableDimension=SCALABLE_DIMENSION,
    )["ScalableTargets"]
    if not targets:
        return False
    aws_call("DeregisterScalableTarget", autoscaling_client.deregister_scalable_target, **ids)
    return True
