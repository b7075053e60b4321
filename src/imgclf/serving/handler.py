"""ImageClassifierHandler: the TorchServe image_classifier shape, runnable under MMS and TorchServe.

    initialize(context)   read the artifact in context.system_properties["model_dir"], load the engine
                          IMGCLF_ENGINE chooses (serving/engines.py: eager PyTorch, fp16 on a GPU, or an exported
                          ONNX / int8 graph on ONNX Runtime) on cpu or cuda:<gpu_id>, warm up with one whole request
    preprocess(requests)  decode every request (per-request errors kept aside), resize/crop/normalise in numpy
                          (serving/preprocess.py: equal to torchvision's eval transform), one (N, 3, S, S) batch
    inference(batch)      the engine's forward pass over every image of every request -> probabilities
    postprocess(...)      encode each request's slice in the format its Accept asked for

`handle(data, context)` runs the four steps for one MMS/TorchServe batch (a list of requests) and answers each
request on its own: a bad request gets its 4xx status and message, the others in the batch are still answered,
and the worker lives on.

torch is imported only by the eager engine and by explanations: with an ONNX engine the worker runs without it
(the CPU serving image, Dockerfile.serve-cpu, has none).
"""

from __future__ import annotations

import io
import logging
import time
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from imgclf.artifact import load_index, load_meta, verify_files
from imgclf.serving import decoders, encoders, engines, errors, explanations
from imgclf.serving.environment import HandlerSettings, torch_threads
from imgclf.serving.preprocess import Preprocessing, Preprocessor
from imgclf.serving.request_metrics import RequestMetrics

log = logging.getLogger(__name__)

CUSTOM_ATTRIBUTES = "x-amzn-sagemaker-custom-attributes"
MAX_FORWARD_BATCH = 64  # images per forward pass; bounds activation memory for big requests


@dataclass
class Batch:
    """Preprocessed images of one MMS batch: `tensor` rows [start, end) (float32 NCHW) belong to request i."""

    tensor: np.ndarray | None
    slices: dict[int, tuple[int, int]] = field(default_factory=dict)
    formats: dict[int, encoders.ResponseFormat] = field(default_factory=dict)
    failures: dict[int, BaseException] = field(default_factory=dict)
    explain: dict[int, explanations.ExplainRequest] = field(default_factory=dict)  # explanations (issue 14)


def _device(gpu_id: Any) -> str:
    """cuda:<gpu_id> when MMS gave this worker a GPU and torch sees one, else cpu (always cpu without torch: the
    CPU image's ONNX Runtime has no CUDA provider)."""
    if gpu_id is None or int(gpu_id) < 0 or not engines.runtime_installed(engines.EAGER):
        return "cpu"
    import torch

    return f"cuda:{int(gpu_id)}" if torch.cuda.is_available() else "cpu"


def _headers(context: Any, idx: int) -> dict[str, str]:
    """Request headers, lower-cased (MMS and TorchServe both keep them per request index)."""
    raw: dict = {}
    try:
        raw = context.get_all_request_header(idx) or {}
    except (AttributeError, IndexError, KeyError, TypeError):
        processors = getattr(context, "request_processor", None) or []
        if idx < len(processors):
            raw = processors[idx].get_request_properties() or {}
    out = {}
    for key, value in raw.items():
        key = key.decode() if isinstance(key, bytes) else str(key)
        out[key.lower()] = value.decode() if isinstance(value, bytes) else str(value)
    return out


class ImageClassifierHandler:
    """One model per worker; MMS/TorchServe call initialize once, then handle for every batch of requests.

    `settings` come from the worker's entry point (handler_service, torchserve_handler), which reads them with
    `HandlerSettings.from_env`; the handler itself reads no environment variable.
    """

    def __init__(self, settings: HandlerSettings) -> None:
        self.initialized = False
        self.engine: engines.Engine | None = None
        self.device = "cpu"
        self.settings = settings
        self.request_metrics = RequestMetrics(settings.metrics)  # one EMF line per batch (off: none)

    # ---- TorchServe's four steps -------------------------------------------------------------------------------

    def initialize(self, context: Any) -> None:
        props = context.system_properties
        model_dir = props.get("model_dir")
        gpu_id = props.get("gpu_id")
        self.device = _device(gpu_id)
        workers = int(props.get("imgclf_workers") or 0) or self.settings.workers
        threads = None if self.device.startswith("cuda") else torch_threads(workers)
        started = time.monotonic()
        verify_files(model_dir)
        self.meta = load_meta(model_dir)
        self.index_to_name = load_index(Path(model_dir), self.meta.num_classes)
        record = engines.read_record(model_dir)
        self.engine = engines.load_engine(model_dir, record, self.settings.engine, self.device, threads)
        self.preprocessor = Preprocessor(Preprocessing.from_meta(self.meta), draft=self.settings.jpeg_draft)
        self._draft = self.preprocessor.apply_draft if self.settings.jpeg_draft else None  # IMGCLF_JPEG_DRAFT
        self.limits = replace(self.settings.limits, resize_short_side=self.meta.resize_size)  # the request budget
        # Explanations (issue 14): built on the first explained request, so plain serving pays nothing; with an
        # ONNX engine the eager model is loaded then (where torch is installed).
        self.explainer = explanations.Explainer(
            self.model,
            self.meta.arch,
            self.meta.input_shape,
            self.meta.mean,
            self.meta.std,
            load_model=lambda: engines.EagerEngine.load(model_dir, self.device).model,
        )
        self._warm_up()
        self.initialized = True
        log.info(
            "Loaded %s (%d classes, %d px) from %s: engine %s (%s) on %s in %.2f s",
            self.meta.arch,
            self.meta.num_classes,
            self.meta.image_size,
            model_dir,
            self.engine.name,
            self.engine.precision,
            self.engine.device,
            time.monotonic() - started,
        )

    @property
    def model(self) -> Any:
        """The eager fp32 torch model when the engine is eager (None otherwise: Grad-CAM then loads its own, as
        it does for an ONNX engine, because its gradients are float32 ones)."""
        return self.engine.model if self.engine is not None and self.engine.name == engines.EAGER else None

    def _warm_up(self) -> None:
        """One whole request (PNG decode, transform, forward, encode) before the worker reports READY: proves
        the pipeline works and spares the first real request the lazy initialisation (~2 s measured)."""
        buf = io.BytesIO()
        Image.new("RGB", (self.meta.resize_size, self.meta.resize_size), (128, 128, 128)).save(buf, "PNG")
        inputs = decoders.decode(buf.getvalue(), "image/png", self.limits)
        probs = self.inference(np.stack([self._to_array(x) for x in inputs]))
        fmt = encoders.negotiate(None, None, self.settings.default_accept, self.settings.top_k)
        encoders.encode(probs, fmt, self.index_to_name)

    def preprocess(self, data: list[dict], context: Any) -> Batch:
        tensors: list[np.ndarray] = []
        batch = Batch(tensor=None)
        for idx, request in enumerate(data):
            try:
                headers = _headers(context, idx)
                content_type = headers.get("content-type")
                if not decoders.is_supported(content_type or ""):
                    raise errors.unsupported_media_type(decoders.media_type(content_type), decoders.SUPPORTED)
                batch.formats[idx] = encoders.negotiate(
                    headers.get("accept"),
                    headers.get(CUSTOM_ATTRIBUTES),
                    self.settings.default_accept,
                    self.settings.top_k,
                )
                body = request.get("body")
                if body is None:
                    body = request.get("data")
                inputs = decoders.decode(body, content_type, self.limits, self._draft)
                rows = [self._to_array(x) for x in inputs]
                # Explanations (issue 14): what the request asks for, refused with 400 before any work.
                wanted = explanations.requested(
                    headers.get("accept"), headers.get(CUSTOM_ATTRIBUTES), batch.formats[idx], len(rows),
                    self.index_to_name,
                )  # fmt: skip
                if wanted is not None:
                    self.explainer.prepare()  # issue 14: a model without a feature map (ViT) is a 400 here
                    batch.explain[idx] = wanted
            except Exception as exc:  # noqa: BLE001 - every failure is answered, per request
                batch.failures[idx] = exc
                continue
            batch.slices[idx] = (len(tensors), len(tensors) + len(rows))
            tensors.extend(rows)
        if tensors:
            batch.tensor = np.stack(tensors)
        return batch

    def _to_array(self, x: decoders.Input) -> np.ndarray:
        if isinstance(x, np.ndarray):
            size = self.meta.image_size
            if x.shape != (3, size, size):
                raise errors.bad_request(
                    f"A float .npy tensor must be (3, {size}, {size}) for this model (already resized and "
                    f"normalised); got {tuple(x.shape)}. Send uint8 images to have the server preprocess them."
                )
            return np.asarray(x, dtype=np.float32)
        return self.preprocessor(x)

    def inference(self, batch: np.ndarray) -> np.ndarray:
        """One forward pass per MAX_FORWARD_BATCH images (one pass for any ordinary batch) -> probabilities."""
        chunks = range(0, len(batch), MAX_FORWARD_BATCH)
        return np.concatenate([self.engine.predict(batch[i : i + MAX_FORWARD_BATCH]) for i in chunks])

    def postprocess(self, probs: np.ndarray | None, batch: Batch, n_requests: int) -> list[tuple[int, str, bytes]]:
        """[(status, content type or reason, body)] per request, in request order."""
        answers = []
        array = probs
        for idx in range(n_requests):
            if idx in batch.failures:
                status, phrase, message = errors.http_error(batch.failures[idx])
                answers.append((status, phrase, (message + "\n").encode()))
                continue
            start, end = batch.slices[idx]
            fmt = batch.formats[idx]
            try:
                body = encoders.encode(array[start:end], fmt, self.index_to_name)
                if idx in batch.explain:  # explanations (issue 14)
                    body = self.explainer.add_to(
                        body, batch.tensor[start:end], array[start:end], batch.explain[idx], self.index_to_name
                    )
            except Exception as exc:  # noqa: BLE001
                status, phrase, message = errors.http_error(exc)
                if status >= 500:  # issue 14: a client's 4xx is answered, not logged as a server fault
                    log.exception("Encoding failed")
                answers.append((status, phrase, (message + "\n").encode()))
                continue
            answers.append((200, fmt.content_type, body))
        return answers

    # ---- the entry point MMS / TorchServe call ---------------------------------------------------------------

    def handle(self, data: list[dict] | None, context: Any) -> list[bytes] | None:
        if data is None:  # MMS's function-style loader probes with (None, context)
            return None
        if not self.initialized:
            self.initialize(context)
        started = time.perf_counter()  # request metrics
        batch = self.preprocess(data, context)
        decoded = time.perf_counter()  # request metrics
        probs = None
        if batch.tensor is not None:
            if len(data) > 1:  # MMS micro-batch: make it visible that requests shared a forward pass
                log.info("forward pass: %d images from %d requests", batch.tensor.shape[0], len(batch.slices))
            try:
                probs = self.inference(batch.tensor)
            except Exception as exc:  # noqa: BLE001 - a failed forward answers 500 to its requests, worker lives
                log.error("Inference failed: %s", traceback.format_exc())
                for idx in batch.slices:
                    batch.failures[idx] = exc
        for idx, exc in batch.failures.items():
            if errors.http_error(exc)[0] >= 500:
                log.error("Request %d failed: %s", idx, "".join(traceback.format_exception(exc)))
        forwarded = time.perf_counter()  # request metrics
        answers = self.postprocess(probs, batch, len(data))
        encoded = time.perf_counter()  # request metrics
        bodies = []
        for idx, (status, type_or_phrase, body) in enumerate(answers):
            if status == 200:
                context.set_response_content_type(idx, type_or_phrase)
            else:
                context.set_response_status(code=status, phrase=type_or_phrase, idx=idx)
                context.set_response_content_type(idx, "text/plain")
            bodies.append(body)
        self._emit_request_metrics(data, context, batch, answers, (started, decoded, forwarded, encoded))
        return bodies

    def _emit_request_metrics(self, data: list, context: Any, batch: Batch, answers: list, marks: tuple) -> None:
        """The request metrics hook (imgclf.serving.request_metrics): timings from the four perf_counter marks."""
        if not self.request_metrics.enabled:
            return
        started, decoded, forwarded, encoded = marks
        self.request_metrics.emit(
            timings_ms={
                "DecodeMs": (decoded - started) * 1000,
                "ForwardMs": (forwarded - decoded) * 1000,
                "EncodeMs": (encoded - forwarded) * 1000,
                "TotalMs": (time.perf_counter() - started) * 1000,
            },
            batch_size=len(data),
            images=0 if batch.tensor is None else int(batch.tensor.shape[0]),
            statuses=[status for status, _, _ in answers],
            model_name=getattr(context, "model_name", None),
        )
