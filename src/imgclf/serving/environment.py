"""Every knob the serving side reads, in one place, typed, with defaults; the worker-count rule.

This is the only serving module that reads the process environment. `imgclf serve` (imgclf.cli.serve) reads it
once into `ServerSettings` (the front-end: port, workers, timeouts, micro-batching, the jar) with the worker's
`HandlerSettings` inside; the MMS worker processes get the validated `HandlerSettings` back through the
environment `server.build_command` writes for them (`HandlerSettings.to_env`), and each worker entry point
(`handler_service`, `torchserve_handler`) reads it with `HandlerSettings.from_env` and hands it to the handler.
The values are read from os.environ directly with the names and defaults of the AWS framework containers
(sagemaker-inference's `Environment`), plus imgclf's own `IMGCLF_*`:

Front-end (`ServerSettings`):

    SAGEMAKER_BIND_TO_PORT               HTTP port (default 8080); `imgclf serve --port` overrides
    SAGEMAKER_MODEL_SERVER_WORKERS       worker processes (default: the rule in `default_workers`); `--workers`
                                         overrides
    SAGEMAKER_MODEL_SERVER_TIMEOUT       seconds a worker may take per request batch (default 60); written as
                                         MMS's default_response_timeout_seconds, because MMS reads the
                                         toolkit's default_response_timeout in minutes (60 -> one hour)
    SAGEMAKER_MODEL_SERVER_TIMEOUT_SECONDS  the same, overrides
    SAGEMAKER_STARTUP_TIMEOUT            read and validated (default 600), not used: the port opens only once a
                                         worker has loaded the model, and SageMaker times the start itself
    SAGEMAKER_MAX_PAYLOAD_IN_MB          request body limit, answered with 413 by the front-end (default 6)
    SAGEMAKER_MODEL_SERVER_VMARGS        JVM options of the front-end (default -XX:-UseContainerSupport
                                         -XX:TieredStopAtLevel=1)
    SAGEMAKER_MULTI_MODEL                "true": multi-model endpoint, models loaded through the management API
                                         (on the public port; POST /models only for directories under the store)
    IMGCLF_MANAGEMENT_PORT               single-model: bind MMS's management API on 127.0.0.1:PORT (default 0:
                                         not at all: it can register models and scale workers)
                                         (default false); `--multi-model` turns it on
    SAGEMAKER_BASE_DIR                   root of the SageMaker layout (default /opt/ml): the model directory is
                                         <base>/model, or <base>/models for a multi-model endpoint;
                                         `--model-dir` overrides
    IMGCLF_BATCH_SIZE                    MMS micro-batch: requests one worker takes at once (default 1 = off);
                                         `--batch-size` overrides
    IMGCLF_MAX_BATCH_DELAY_MS            MMS micro-batch: how long to wait to fill a batch (default 10);
                                         `--max-batch-delay-ms` overrides
    IMGCLF_MEMORY_PER_WORKER_MB          memory budget per worker for the worker-count rule (default: estimated
                                         from the engine that will run and its file, see `worker_memory_mb`)
    IMGCLF_MMS_JAR                       the front-end jar (GatedModelServer + /execution-parameters); default:
                                         the one shipped in this package (imgclf/serving/imgclf-mms.jar, built
                                         by docker/mms/build_jar.sh); none found: stock MMS, with a warning
    JAVA_HOME                            the JRE that runs the front-end (default: `java` on PATH)

Worker (`HandlerSettings`):

    SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT response type when the request has no Accept (default application/json)
    IMGCLF_TOP_K                         labels in a JSON answer (default 5)
    IMGCLF_ENGINE                        auto | eager | fp16 | onnx | int8: the inference engine (default auto:
                                         the fastest the export validated on this kind of device, see
                                         serving/engines.py); one that cannot run here falls back to eager with a
                                         warning
    IMGCLF_JPEG_DRAFT                    on | off: decode a JPEG >= 4x the model's resize size at 1/2, 1/4 or 1/8
                                         scale (libjpeg draft mode), keeping >= 2x the resize size (default off:
                                         the tensor then equals torchvision's eval transform; on: within the bound
                                         stated in serving/preprocess.py, several times cheaper for photos)
    IMGCLF_WORKERS                       workers sharing the CPUs, for the per-worker torch thread count; written
                                         by `imgclf serve`; unset (TorchServe): SAGEMAKER_MODEL_SERVER_WORKERS,
                                         else 1
    the request budget (`limits.ENV`; each refusal names its variable; defaults derived in imgclf.serving.limits):
    IMGCLF_MAX_IMAGES_PER_REQUEST        images (or tensors) per request (default 256)
    IMGCLF_MAX_IMAGE_PIXELS              one image, from its header; larger images get 413 (default 40,000,000)
    IMGCLF_MAX_REQUEST_PIXELS            every image of a request summed (default 64,000,000)
    IMGCLF_MAX_ASPECT_RATIO              long side / short side (default 50)
    IMGCLF_MAX_RESIZED_PIXELS            one image after the resize step (default 16,000,000)
    IMGCLF_MAX_NPY_BYTES                 array data of an .npy body (default 134,217,728 = 128 MiB)
    IMGCLF_MAX_NPY_NDIM                  dimensions of an .npy array (default 4)
    IMGCLF_NPY_DTYPES                    comma-separated .npy dtypes (default uint8,float16,float32,float64)
    IMGCLF_MAX_JSON_BYTES                a JSON / JSON lines body (default 8,388,608 = 8 MiB)
    IMGCLF_MAX_JSON_DEPTH                nesting of [ and { (default 16)
    IMGCLF_IMAGE_FORMATS                 comma-separated Pillow formats (default JPEG,PNG,WEBP,GIF,BMP,TIFF)
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from imgclf.serving import engines
from imgclf.serving.engines import REQUESTS as ENGINE_REQUESTS
from imgclf.serving.limits import ENV as LIMITS_ENV
from imgclf.serving.limits import RequestLimits
from imgclf.system import cpu_count, gpu_count, memory_mb  # noqa: F401 (gpu_count re-exported for tests)

DEFAULT_TOP_K = 5
DEFAULT_MAX_PAYLOAD_MB = 6  # SageMaker real-time invocation limit
DEFAULT_ACCEPT = "application/json"
# C1 only (no C2 JIT): the front-end only moves bytes, and C2's compile threads compete with the workers for the
# CPUs at start-up. benchmarks/frontend_jit_bench.py: cold start 0.77x, req/s at 8 clients 1.15x (NOTES.md).
DEFAULT_VMARGS = "-XX:-UseContainerSupport -XX:TieredStopAtLevel=1"
DEFAULT_JPEG_DRAFT = False  # exact by default: see benchmarks/NOTES.md (JPEG draft mode) for the measurement
FRONTEND_RESERVE_MB = 1024  # the Java front-end and the OS
# One worker's RSS, measured by benchmarks/worker_memory_bench.py (ResNet-18 and -50, one 224 px request; NOTES.md
# "Worker memory"): the runtime imported with no model, then the growth per MB of the engine's file.
WORKER_BASE_MB = 700  # torch + torchvision imported (680 measured)
WORKER_WEIGHT_COPIES = 2  # eager: + 1.8-1.9x model.pt
ONNX_WORKER_BASE_MB = 100  # onnxruntime, torch never imported: 63 measured, + ~45 per session whatever its size
ONNX_WORKER_WEIGHT_COPIES = 3  # onnx / int8: + ~2.5x the .onnx file beyond that

PACKAGED_MMS_JAR = Path(__file__).resolve().with_name("imgclf-mms.jar")  # package data


def _int_env(environ: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not an integer") from None
    return _at_least(f"{name}={value}", value, minimum)


def _at_least(label: str, value: int, minimum: int) -> int:
    if value < minimum:
        raise ValueError(f"{label} must be >= {minimum}")
    return value


def worker_estimate_mb(weights_mb: float, torch: bool) -> int:
    """Estimated RSS of one worker whose engine file (model.pt, or the .onnx) is `weights_mb`: with torch (eager)
    or with ONNX Runtime alone. The one formula: `worker_memory_mb` and the serverless memory check use it."""
    if torch:
        return int(WORKER_BASE_MB + WORKER_WEIGHT_COPIES * weights_mb)
    return int(ONNX_WORKER_BASE_MB + ONNX_WORKER_WEIGHT_COPIES * weights_mb)


def worker_memory_mb(
    model_dir: str | Path | None,
    override_mb: int = 0,
    engine: str = "auto",
    runtimes: engines.Runtimes | None = None,
) -> int:
    """Estimated RSS of one CPU worker, for the engine it will run: `engine` (IMGCLF_ENGINE) as the workers will
    choose it (`engines.choose_engine` with `runtimes`, default what is installed). An ONNX engine's worker never
    imports torch, so it is far smaller. `override_mb` (IMGCLF_MEMORY_PER_WORKER_MB) replaces the estimate."""
    if override_mb:
        return override_mb
    runtimes = runtimes or engines.Runtimes.installed()
    record = engines.read_record(model_dir) if model_dir is not None else None
    try:
        chosen = engines.choose_engine(engine, record, "cpu", runtimes)
    except engines.EngineUnavailable:  # nothing can run: `imgclf serve` refuses it (engines.check_servable)
        chosen = engines.EAGER
    on_torch = chosen in engines.TORCH_ENGINES
    weights_mb = 0.0
    if model_dir is not None:
        weights_file = Path(model_dir) / ("model.pt" if on_torch else engines.validated(record)[chosen]["file"])
        if weights_file.is_file():
            weights_mb = weights_file.stat().st_size / (1 << 20)
    return worker_estimate_mb(weights_mb, torch=on_torch and runtimes.torch)


def default_workers(
    model_dir: str | Path | None,
    cpus: int,
    mem_mb: int,
    gpus: int,
    per_worker_mb: int = 0,
    engine: str = "auto",
    runtimes: engines.Runtimes | None = None,
) -> int:
    """The worker-count rule.

    GPU: one worker per device (each worker gets its own cuda:N from MMS).
    CPU: as many workers as CPUs, but no more than fit in memory after reserving room for the front-end:
    floor((memory - 1 GiB) / per-worker estimate), at least 1. Each worker then uses cpus // workers torch
    threads, so the CPUs are shared, not oversubscribed. The stock rule (one worker per CPU, whatever the model
    size) runs a 96-CPU host out of memory with a large model.
    """
    if gpus > 0:
        return gpus
    per_worker = worker_memory_mb(model_dir, per_worker_mb, engine, runtimes)
    fit = (mem_mb - FRONTEND_RESERVE_MB) // max(1, per_worker)
    return max(1, min(cpus, fit))


def torch_threads(workers: int, cpus: int | None = None) -> int:
    """Intra-op threads per worker so that all workers together use the CPUs once."""
    cpus = cpus or cpu_count()
    return max(1, math.floor(cpus / max(1, workers)))


def default_model_dir(multi_model: bool, environ: Mapping[str, str] | None = None) -> str:
    """<SAGEMAKER_BASE_DIR or /opt/ml>/model, or .../models for a multi-model endpoint."""
    environ = os.environ if environ is None else environ
    base = environ.get("SAGEMAKER_BASE_DIR", "/opt/ml")
    return os.path.join(base, "models" if multi_model else "model")


def find_mms_jar(environ: Mapping[str, str] | None = None) -> Path | None:
    """The front-end jar: $IMGCLF_MMS_JAR, else the package's (the images install it with the wheel)."""
    environ = os.environ if environ is None else environ
    for candidate in (environ.get("IMGCLF_MMS_JAR", "").strip(), PACKAGED_MMS_JAR):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


LIMIT_LISTS = ("npy_dtypes", "image_formats")  # comma-separated lists; every other limit is a number
LIMIT_FLOATS = ("max_aspect_ratio",)


def request_limits_from_env(
    resize_short_side: int | None = None, environ: Mapping[str, str] | None = None
) -> RequestLimits:
    """RequestLimits from the IMGCLF_* variables of `limits.ENV` (an unset or empty variable keeps the default)."""
    environ = os.environ if environ is None else environ
    values: dict = {"resize_short_side": resize_short_side}
    for name, variable in LIMITS_ENV.items():
        raw = environ.get(variable, "").strip()
        if not raw:
            continue
        if name in LIMIT_LISTS:
            items = tuple(x.strip() for x in raw.split(",") if x.strip())
            values[name] = tuple(x.upper() for x in items) if name == "image_formats" else items
            continue
        try:
            values[name] = float(raw) if name in LIMIT_FLOATS else int(raw)
        except ValueError:
            raise ValueError(f"{variable}={raw!r} is not a number") from None
    return RequestLimits(**values)


def _limits_to_env(limits: RequestLimits) -> dict[str, str]:
    """The variables `request_limits_from_env` reads back to the same limits."""
    out = {}
    for name, variable in LIMITS_ENV.items():
        value = getattr(limits, name)
        out[variable] = ",".join(value) if name in LIMIT_LISTS else str(value)
    return out


def engine_from_env(environ: Mapping[str, str]) -> str:
    """IMGCLF_ENGINE, checked: a typo fails `imgclf serve` at once instead of silently serving eager."""
    raw = environ.get("IMGCLF_ENGINE", "").strip().lower() or "auto"
    if raw not in ENGINE_REQUESTS:
        raise ValueError(f"IMGCLF_ENGINE={raw!r} must be one of {', '.join(ENGINE_REQUESTS)}")
    return raw


def on_off(environ: Mapping[str, str], name: str, default: bool) -> bool:
    """An on/off variable (on/off, true/false, 1/0); unset or empty keeps `default`; anything else fails."""
    raw = environ.get(name, "").strip().lower()
    if not raw:
        return default
    if raw not in {"on", "off", "1", "0", "true", "false"}:
        raise ValueError(f"{name}={raw!r} must be on or off")
    return raw in {"on", "1", "true"}


def _lenient_workers(environ: Mapping[str, str]) -> int:
    """IMGCLF_WORKERS, else SAGEMAKER_MODEL_SERVER_WORKERS, else 1; a worker never dies over this count."""
    try:
        return max(1, int(environ.get("IMGCLF_WORKERS") or environ.get("SAGEMAKER_MODEL_SERVER_WORKERS") or 1))
    except ValueError:
        return 1


@dataclass(frozen=True)
class HandlerSettings:
    """What a worker (the handler) reads: output defaults, the request budget (the handler sets its
    resize_short_side from the model), and how many workers share the CPUs."""

    default_accept: str = DEFAULT_ACCEPT
    top_k: int = DEFAULT_TOP_K
    limits: RequestLimits = field(default_factory=RequestLimits)
    workers: int = 1
    metrics: RequestMetricsSettings = field(default_factory=lambda: request_metrics_settings({}))
    engine: str = "auto"  # IMGCLF_ENGINE
    jpeg_draft: bool = DEFAULT_JPEG_DRAFT  # IMGCLF_JPEG_DRAFT

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> HandlerSettings:
        environ = os.environ if environ is None else environ
        return cls(
            default_accept=environ.get("SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT", "").strip() or DEFAULT_ACCEPT,
            top_k=_int_env(environ, "IMGCLF_TOP_K", DEFAULT_TOP_K, minimum=1),
            limits=request_limits_from_env(environ=environ),
            workers=_lenient_workers(environ),
            metrics=request_metrics_settings(environ),
            engine=engine_from_env(environ),
            jpeg_draft=on_off(environ, "IMGCLF_JPEG_DRAFT", DEFAULT_JPEG_DRAFT),
        )

    def to_env(self) -> dict[str, str]:
        """The variables `from_env` reads back in a worker process."""
        return {
            "SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT": self.default_accept,
            "IMGCLF_TOP_K": str(self.top_k),
            **_limits_to_env(self.limits),
            "IMGCLF_WORKERS": str(self.workers),
            "IMGCLF_REQUEST_METRICS": "on" if self.metrics.enabled else "off",
            "IMGCLF_REQUEST_METRICS_TO": self.metrics.destination,
            "IMGCLF_ENDPOINT_NAME": self.metrics.endpoint_name,
            "IMGCLF_ENDPOINT_VARIANT": self.metrics.variant,
            "IMGCLF_ENGINE": self.engine,
            "IMGCLF_JPEG_DRAFT": "on" if self.jpeg_draft else "off",
        }


@dataclass(frozen=True)
class ServerSettings:
    """What `imgclf serve` turns into the MMS front-end's configuration (and the workers' HandlerSettings)."""

    port: int
    workers: int
    workers_from_env: bool  # given (SAGEMAKER_MODEL_SERVER_WORKERS or --workers), not the rule's
    timeout_s: int
    startup_timeout_s: int
    max_payload_mb: int
    batch_size: int
    max_batch_delay_ms: int
    vmargs: str
    multi_model: bool
    gpus: int
    model_dir: str = "/opt/ml/model"  # absolute; the model store for a multi-model endpoint
    host: str = "0.0.0.0"
    mms_jar: Path | None = None
    java: str = "java"
    handler: HandlerSettings = field(default_factory=HandlerSettings)
    # Single-model endpoints need no management API: 0 = not bound at all; a port = bound on 127.0.0.1 only (for
    # operators and tests). Multi-model endpoints serve it on the public port, as SageMaker requires.
    management_port: int = 0

    @classmethod
    def from_env(
        cls,
        model_dir: str | Path | None = None,
        port: int | None = None,
        *,
        host: str = "0.0.0.0",
        workers: int | None = None,
        batch_size: int | None = None,
        max_batch_delay_ms: int | None = None,
        multi_model: bool = False,
        environ: Mapping[str, str] | None = None,
    ) -> ServerSettings:
        """The environment's values; the keyword arguments (command-line flags) win where given.

        Raises ValueError naming the variable or flag whose value is out of range.
        """
        environ = os.environ if environ is None else environ
        multi_model = multi_model or environ.get("SAGEMAKER_MULTI_MODEL", "false").lower() == "true"
        model_dir = os.path.abspath(model_dir or default_model_dir(multi_model, environ))
        gpus = gpu_count()
        given_workers = (
            _at_least(f"--workers {workers}", workers, 0)
            if workers is not None
            else _int_env(environ, "SAGEMAKER_MODEL_SERVER_WORKERS", 0)
        )
        per_worker_mb = _int_env(environ, "IMGCLF_MEMORY_PER_WORKER_MB", 0)
        # The workers' knobs are read here too: a typo fails `imgclf serve`, not a crash-looping worker.
        handler = HandlerSettings.from_env(environ)
        chosen_workers = given_workers or default_workers(
            None if multi_model else model_dir, cpu_count(), memory_mb(), gpus, per_worker_mb, handler.engine
        )
        timeout_s = _int_env(environ, "SAGEMAKER_MODEL_SERVER_TIMEOUT", 60, minimum=1)
        java_home = environ.get("JAVA_HOME")
        return cls(
            port=port if port is not None else _int_env(environ, "SAGEMAKER_BIND_TO_PORT", 8080, minimum=1),
            workers=chosen_workers,
            workers_from_env=bool(given_workers),
            timeout_s=_int_env(environ, "SAGEMAKER_MODEL_SERVER_TIMEOUT_SECONDS", timeout_s, 1),
            startup_timeout_s=_int_env(environ, "SAGEMAKER_STARTUP_TIMEOUT", 600, minimum=1),
            max_payload_mb=_int_env(environ, "SAGEMAKER_MAX_PAYLOAD_IN_MB", DEFAULT_MAX_PAYLOAD_MB, minimum=1),
            batch_size=(
                _at_least(f"--batch-size {batch_size}", batch_size, 1)
                if batch_size is not None
                else _int_env(environ, "IMGCLF_BATCH_SIZE", 1, minimum=1)
            ),
            max_batch_delay_ms=(
                _at_least(f"--max-batch-delay-ms {max_batch_delay_ms}", max_batch_delay_ms, 0)
                if max_batch_delay_ms is not None
                else _int_env(environ, "IMGCLF_MAX_BATCH_DELAY_MS", 10, minimum=0)
            ),
            vmargs=environ.get("SAGEMAKER_MODEL_SERVER_VMARGS", DEFAULT_VMARGS),
            management_port=_int_env(environ, "IMGCLF_MANAGEMENT_PORT", 0, minimum=0),
            multi_model=multi_model,
            gpus=gpus,
            model_dir=model_dir,
            host=host,
            mms_jar=find_mms_jar(environ),
            java=os.path.join(java_home, "bin", "java") if java_home else "java",
            handler=replace(handler, workers=chosen_workers),
        )

    def worker_env(self, server_pid: int | None = None) -> dict[str, str]:
        """What the front-end's environment adds for its workers (the rest is inherited).

        `server_pid` (the `imgclf serve` process): unless IMGCLF_REQUEST_METRICS_TO was set, the workers write
        their EMF lines straight to that process's stdout (/proc/PID/fd/1, the container's log), not to their
        own stdout, which MMS re-logs with a prefix that keeps CloudWatch from reading the line as EMF.
        """
        handler = self.handler
        metrics = handler.metrics
        if server_pid is not None and metrics.enabled and not metrics.destination:
            stdout = server_stdout(server_pid)
            if stdout:
                handler = replace(handler, metrics=replace(metrics, destination=stdout))
        env = handler.to_env()
        if self.multi_model:
            env["SAGEMAKER_MULTI_MODEL"] = "true"
        return env


# ---- request metrics (imgclf.serving.request_metrics) -----------------------------------------------------------
#   IMGCLF_REQUEST_METRICS      on | off: one CloudWatch EMF line per request batch (default on)
#   IMGCLF_REQUEST_METRICS_TO   where the lines go: a file path, e.g. /proc/1/fd/1 (the container's stdout, free
#                               of MMS's log prefix). Unset: `imgclf serve` points its workers at its own stdout
#                               (/proc/<serve pid>/fd/1, ServerSettings.worker_env); a worker started without it
#                               (TorchServe) writes to its own stdout
#   IMGCLF_ENDPOINT_NAME / IMGCLF_ENDPOINT_VARIANT  the metrics' dimensions (`imgclf sagemaker deploy` sets them)


def server_stdout(pid: int) -> str:
    """/proc/PID/fd/1 where the platform has it (Linux), else "" (the workers keep their own stdout)."""
    path = f"/proc/{pid}/fd/1"
    return path if os.path.exists(path) else ""


@dataclass(frozen=True)
class RequestMetricsSettings:
    enabled: bool
    destination: str
    endpoint_name: str
    variant: str


def request_metrics_settings(environ: Mapping[str, str] | None = None) -> RequestMetricsSettings:
    environ = os.environ if environ is None else environ
    raw = environ.get("IMGCLF_REQUEST_METRICS", "on").strip().lower()
    if raw not in {"", "on", "off", "1", "0", "true", "false"}:
        raise ValueError(f"IMGCLF_REQUEST_METRICS={raw!r} must be on or off")
    return RequestMetricsSettings(
        enabled=raw not in {"off", "0", "false"},
        destination=environ.get("IMGCLF_REQUEST_METRICS_TO", "").strip(),
        endpoint_name=environ.get("IMGCLF_ENDPOINT_NAME", "").strip() or "local",
        variant=environ.get("IMGCLF_ENDPOINT_VARIANT", "").strip() or "AllTraffic",
    )
