"""A CloudWatch dashboard for one endpoint: SageMaker's own metrics (AWS/SageMaker invocations, errors, model and
overhead latency; /aws/sagemaker/Endpoints CPU and memory; the async backlog) beside the server's request metrics
(the EMF lines of imgclf.serving.request_metrics: decode / forward / encode / total ms, images, batch size).
"""

from __future__ import annotations

import json

from imgclf.sagemaker.autoscaling import DEFAULT_VARIANT
from imgclf.sagemaker.aws_errors import aws_call


def dashboard_body(
    endpoint_name: str, region: str, *, variant: str = DEFAULT_VARIANT, namespace: str = "imgclf", is_async=False
) -> dict:
    """PutDashboard DashboardBody (as a dict; json.dumps it). Metric dimensions match request_metrics.py."""
    ep = ["EndpointName", endpoint_name, "VariantName", variant]

    def widget(title: str, metrics: list, x: int, y: int, stat: str = "Average") -> dict:
        return {
            "type": "metric",
            "x": x,
            "y": y,
            "width": 12,
            "height": 6,
            "properties": {"title": title, "region": region, "stat": stat, "period": 60, "metrics": metrics},
        }

    ours = ["EndpointName", endpoint_name, "EndpointVariant", variant]  # request_metrics.py's dimensions
    widgets = [
        widget(
            "Invocations / errors",
            [
                ["AWS/SageMaker", "Invocations", *ep],
                ["AWS/SageMaker", "Invocation4XXErrors", *ep],
                ["AWS/SageMaker", "Invocation5XXErrors", *ep],
            ],
            0,
            0,
            "Sum",
        ),
        widget(
            "Latency (us): model vs overhead",
            [["AWS/SageMaker", "ModelLatency", *ep], ["AWS/SageMaker", "OverheadLatency", *ep]],
            12,
            0,
        ),
        widget(
            "Server latency split (ms, p50)",
            [[namespace, m, *ours] for m in ("DecodeMs", "ForwardMs", "EncodeMs", "TotalMs")],
            0,
            6,
            "p50",
        ),
        widget("Images per batch", [[namespace, "Images", *ours], [namespace, "BatchSize", *ours]], 12, 6),
        widget(
            "Instance CPU / memory (%)",
            [
                ["/aws/sagemaker/Endpoints", "CPUUtilization", *ep],
                ["/aws/sagemaker/Endpoints", "MemoryUtilization", *ep],
            ],
            0,
            12,
        ),
    ]
    if is_async:
        widgets.append(
            widget(
                "Async backlog",
                [["AWS/SageMaker", "ApproximateBacklogSizePerInstance", "EndpointName", endpoint_name]],
                12,
                12,
            )
        )
    return {"widgets": widgets}


def put_dashboard(cloudwatch_client, name: str, body: dict) -> None:
    aws_call(
        f"PutDashboard {name}", cloudwatch_client.put_dashboard, DashboardName=name, DashboardBody=json.dumps(body)
    )
