"""Every knob the serving side reads, in one place, typed, with defaults.

SageMaker's own variables are read through sagemaker-inference's `Environment` (same names, same defaults as every
AWS framework container); imgclf's additions are `IMGCLF_*`:

    SAGEMAKER_BIND_TO_PORT               HTTP port (default 8080); `imgclf serve --port` overrides
    SAGEMAKER_MODEL_SERVER_WORKERS       worker processes (default: the rule in `default_workers`)
    SAGEMAKER_MODEL_SERVER_TIMEOUT       seconds a worker may take per request batch (default 60); written as
                                         MMS's default_response_timeout_seconds, because MMS reads the
                                         toolkit's default_response_timeout in minutes (60 -> one hour)
    SAGEMAKER_MODEL_SERVER_TIMEOUT_SECONDS  the same, overrides
    SAGEMAKER_STARTUP_TIMEOUT            seconds to wait for the model server to come up (default 600)
    SAGEMAKER_MAX_PAYLOAD_IN_MB          request body limit, answered with 413 by the front-end (default 6)
    SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT response type when the request has no Accept (default application/json)
    SAGEMAKER_MODEL_SERVER_VMARGS        JVM options of the front-end
    SAGEMAKER_MULTI_MODEL                "true": multi-model endpoint, models loaded through the management API
    IMGCLF_TOP_K                         labels in a JSON answer (default 5)
    IMGCLF_MAX_IMAGE_PIXELS              decoded-image pixel limit; larger images get 413 (default 40,000,000)
    IMGCLF_BATCH_SIZE                    MMS micro-batch: requests one worker takes at once (default 1 = off)
    IMGCLF_MAX_BATCH_DELAY_MS            MMS micro-batch: how long to wait to fill a batch (default 10)
    IMGCLF_MEMORY_PER_WORKER_MB          memory budget per worker for the worker-count rule (default: estimated)
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from imgclf.system import cpu_count, gpu_count, memory_mb  # noqa: F401 (re-exported for the server)

DEFAULT_TOP_K = 5
DEFAULT_MAX_IMAGE_PIXELS = 40_000_000  # 40 MP: any real photo; a 20,000 x 20,000 bomb is 400 MP
DEFAULT_MAX_PAYLOAD_MB = 6  # SageMaker real-time invocation limit
FRONTEND_RESERVE_MB = 1024  # the Java front-end and the OS
WORKER_BASE_MB = 600  # a Python worker with torch + torchvision imported, no model


def _int_env(name: str, default: int, minimum: int = 0) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not an integer") from None
    if value < minimum:
        raise ValueError(f"{name}={value} must be >= {minimum}")
    return value


def worker_memory_mb(model_dir: str | Path | None) -> int:
    """Estimated RSS of one worker: torch itself plus a few copies of the weights (load, model, activations)."""
    override = _int_env("IMGCLF_MEMORY_PER_WORKER_MB", 0)
    if override:
        return override
    weights = 0
    if model_dir is not None:
        weights_file = Path(model_dir) / "model.pt"
        if weights_file.is_file():
            weights = weights_file.stat().st_size // (1 << 20)
    return WORKER_BASE_MB + 3 * weights


def default_workers(model_dir: str | Path | None, cpus: int, mem_mb: int, gpus: int) -> int:
    """The worker-count rule.

    GPU: one worker per device (each worker gets its own cuda:N from MMS).
    CPU: as many workers as CPUs, but no more than fit in memory after reserving room for the front-end:
    floor((memory - 1 GiB) / per-worker estimate), at least 1. Each worker then uses cpus // workers torch
    threads, so the CPUs are shared, not oversubscribed. The stock rule (one worker per CPU, whatever the model
    size) runs a 96-CPU host out of memory with a large model.
    """
    if gpus > 0:
        return gpus
    fit = (mem_mb - FRONTEND_RESERVE_MB) // max(1, worker_memory_mb(model_dir))
    return max(1, min(cpus, fit))


@dataclass(frozen=True)
class ServingSettings:
    """Settings a worker reads per request (decoding limits, output defaults)."""

    default_accept: str
    top_k: int
    max_image_pixels: int

    @classmethod
    def from_env(cls) -> ServingSettings:
        return cls(
            default_accept=os.environ.get("SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT", "").strip() or "application/json",
            top_k=_int_env("IMGCLF_TOP_K", DEFAULT_TOP_K, minimum=1),
            max_image_pixels=_int_env("IMGCLF_MAX_IMAGE_PIXELS", DEFAULT_MAX_IMAGE_PIXELS, minimum=1),
        )


@dataclass(frozen=True)
class ServerSettings:
    """Settings `imgclf serve` turns into the MMS configuration."""

    port: int
    workers: int
    workers_from_env: bool
    timeout_s: int
    startup_timeout_s: int
    max_payload_mb: int
    batch_size: int
    max_batch_delay_ms: int
    vmargs: str
    multi_model: bool
    gpus: int

    @classmethod
    def from_env(cls, model_dir: str | Path | None, port: int | None = None) -> ServerSettings:
        gpus = gpu_count()
        env_workers = _int_env("SAGEMAKER_MODEL_SERVER_WORKERS", 0)
        workers = env_workers or default_workers(model_dir, cpu_count(), memory_mb(), gpus)
        return cls(
            port=port if port is not None else _int_env("SAGEMAKER_BIND_TO_PORT", 8080, minimum=1),
            workers=workers,
            workers_from_env=bool(env_workers),
            timeout_s=_int_env(
                "SAGEMAKER_MODEL_SERVER_TIMEOUT_SECONDS", _int_env("SAGEMAKER_MODEL_SERVER_TIMEOUT", 60, minimum=1), 1
            ),
            startup_timeout_s=_int_env("SAGEMAKER_STARTUP_TIMEOUT", 600, minimum=1),
            max_payload_mb=_int_env("SAGEMAKER_MAX_PAYLOAD_IN_MB", DEFAULT_MAX_PAYLOAD_MB, minimum=1),
            batch_size=_int_env("IMGCLF_BATCH_SIZE", 1, minimum=1),
            max_batch_delay_ms=_int_env("IMGCLF_MAX_BATCH_DELAY_MS", 10, minimum=0),
            vmargs=os.environ.get("SAGEMAKER_MODEL_SERVER_VMARGS", "-XX:-UseContainerSupport"),
            multi_model=os.environ.get("SAGEMAKER_MULTI_MODEL", "false").lower() == "true",
            gpus=gpus,
        )


def torch_threads(workers: int, cpus: int | None = None) -> int:
    """Intra-op threads per worker so that all workers together use the CPUs once."""
    cpus = cpus or cpu_count()
    return max(1, math.floor(cpus / max(1, workers)))


# ---- the per-request memory budget (imgclf.serving.limits: the defaults and how they follow from the bound) ----

LIMIT_LISTS = ("npy_dtypes", "image_formats")  # comma-separated lists; every other limit is a number
LIMIT_FLOATS = ("max_aspect_ratio",)


def request_limits_from_env(resize_short_side: int | None = None):
    """RequestLimits from the IMGCLF_* variables of `limits.ENV` (an unset or empty variable keeps the default)."""
    from imgclf.serving.limits import ENV as LIMITS_ENV  # here, not at the top: this section is self-contained
    from imgclf.serving.limits import RequestLimits

    values: dict = {"resize_short_side": resize_short_side}
    for field, name in LIMITS_ENV.items():
        raw = os.environ.get(name, "").strip()
        if not raw:
            continue
        if field in LIMIT_LISTS:
            items = tuple(x.strip() for x in raw.split(",") if x.strip())
            values[field] = tuple(x.upper() for x in items) if field == "image_formats" else items
            continue
        try:
            values[field] = float(raw) if field in LIMIT_FLOATS else int(raw)
        except ValueError:
            raise ValueError(f"{name}={raw!r} is not a number") from None
    return RequestLimits(**values)


# ---- request metrics (imgclf.serving.request_metrics) -----------------------------------------------------------
#   IMGCLF_REQUEST_METRICS      on | off: one CloudWatch EMF line per request batch (default on)
#   IMGCLF_REQUEST_METRICS_TO   where the lines go: a file path (e.g. /proc/1/fd/1, the container's stdout, free
#                               of MMS's log prefix) or empty for the worker's own stdout (default)
#   IMGCLF_ENDPOINT_NAME / IMGCLF_ENDPOINT_VARIANT  the metrics' dimensions (`imgclf sagemaker deploy` sets them)


@dataclass(frozen=True)
class RequestMetricsSettings:
    enabled: bool
    destination: str
    endpoint_name: str
    variant: str


def request_metrics_settings() -> RequestMetricsSettings:
    raw = os.environ.get("IMGCLF_REQUEST_METRICS", "on").strip().lower()
    if raw not in {"", "on", "off", "1", "0", "true", "false"}:
        raise ValueError(f"IMGCLF_REQUEST_METRICS={raw!r} must be on or off")
    return RequestMetricsSettings(
        enabled=raw not in {"off", "0", "false"},
        destination=os.environ.get("IMGCLF_REQUEST_METRICS_TO", "").strip(),
        endpoint_name=os.environ.get("IMGCLF_ENDPOINT_NAME", "").strip() or "local",
        variant=os.environ.get("IMGCLF_ENDPOINT_VARIANT", "").strip() or "AllTraffic",
    )
