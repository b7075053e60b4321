"""Inference engines: one interface over eager PyTorch and ONNX Runtime, and the choice between them.

    engine = load_engine(model_dir, meta, record, requested="auto", device="cpu", threads=4)
    probs = engine.predict(batch)          # (N, 3, S, S) float32 -> (N, num_classes) float32 probabilities

`record` is what `imgclf.export.export_engines` wrote into imgclf.json (its "export" entry, `read_record`): for
each engine kept,
its file, sha256 and the p50 latency measured on the validation images; an engine not in it was not validated and
is never chosen. `auto` picks the fastest validated engine the installed runtimes can run; a requested engine that
cannot be used (not validated, file missing or changed, runtime not installed) falls back to eager with a warning.

This module imports neither torch nor onnxruntime at import time: the CPU serving image has no torch, and
EagerEngine imports it only when it is loaded.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from imgclf.checksums import sha256_file

log = logging.getLogger(__name__)

EAGER = "eager"
ONNX = "onnx"
INT8 = "int8"
ENGINE_NAMES = (EAGER, ONNX, INT8)
REQUESTS = ("auto", *ENGINE_NAMES)
ONNX_INPUT = "input"  # the exported graph's input name (imgclf.export)
RECORD_KEY = "export"  # imgclf.json's entry holding the export record
META_FILE = "imgclf.json"  # imgclf.artifact.META_FILE (named here: this module never imports the artifact code)


class EngineUnavailable(RuntimeError):
    """The requested engine cannot run here; the reason says why (and `choose_engine` falls back)."""


class Engine(Protocol):
    name: str
    device: str

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """(N, 3, S, S) float32 normalised images -> (N, num_classes) float32 probabilities."""
        ...


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits.astype(np.float32, copy=False) - logits.max(axis=1, keepdims=True)
    np.exp(shifted, out=shifted)
    shifted /= shifted.sum(axis=1, keepdims=True)
    return shifted


def runtime_installed(name: str) -> bool:
    """Whether the runtime an engine needs is importable (torch for eager, onnxruntime for onnx/int8)."""
    module = "torch" if name == EAGER else "onnxruntime"
    return importlib.util.find_spec(module) is not None


class EagerEngine:
    """The torch model from model.pt (the artifact loader), softmax in float32."""

    name = EAGER

    def __init__(self, model: Any, device: str, max_batch: int = 64) -> None:
        self.model = model
        self.device = device
        self.max_batch = max_batch

    @classmethod
    def load(cls, model_dir: str | Path, device: str = "cpu", threads: int | None = None) -> EagerEngine:
        import torch

        from imgclf.artifact import load_artifact

        if threads and not device.startswith("cuda"):
            torch.set_num_threads(threads)
        return cls(load_artifact(model_dir, device).model, device)

    def predict(self, batch: np.ndarray) -> np.ndarray:
        import torch

        outputs = []
        with torch.inference_mode():
            for chunk in torch.split(torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)), self.max_batch):
                logits = self.model(chunk.to(self.device, non_blocking=True))
                outputs.append(torch.softmax(logits.float(), dim=1).cpu().numpy())
        return np.concatenate(outputs)


class OnnxEngine:
    """An ONNX graph (fp32 or int8 QDQ) on ONNX Runtime: the CUDA provider on a GPU device when onnxruntime-gpu
    is installed, else the CPU provider with `threads` intra-op threads (one inter-op thread: one request at a
    time per worker, parallelism comes from the workers)."""

    def __init__(self, session: Any, name: str, device: str) -> None:
        self.session = session
        self.name = name
        self.device = device
        self.input_name = session.get_inputs()[0].name

    @classmethod
    def load(
        cls,
        path: str | Path,
        name: str = ONNX,
        device: str = "cpu",
        threads: int | None = None,
        sha256: str | None = None,
    ) -> OnnxEngine:
        try:
            import onnxruntime as ort
        except ImportError:
            raise EngineUnavailable("onnxruntime is not installed") from None
        path = Path(path)
        if not path.is_file():
            raise EngineUnavailable(f"{path} does not exist")
        if sha256 and sha256_file(path) != sha256:
            raise EngineUnavailable(f"{path} does not match the sha256 recorded when it was validated")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.inter_op_num_threads = 1
        if threads:
            options.intra_op_num_threads = threads
        providers: list[Any] = ["CPUExecutionProvider"]
        if device.startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
            device_id = int(device.partition(":")[2] or 0)
            providers.insert(0, ("CUDAExecutionProvider", {"device_id": device_id}))
        elif device.startswith("cuda"):
            log.warning("onnxruntime has no CUDA provider here (install onnxruntime-gpu): %s runs on the CPU", name)
            device = "cpu"
        session = ort.InferenceSession(str(path), options, providers=providers)
        return cls(session, name, device)

    def predict(self, batch: np.ndarray) -> np.ndarray:
        (logits,) = self.session.run(None, {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)})
        return softmax(logits)


def read_record(model_dir: str | Path) -> dict | None:
    """The export record imgclf.json holds (None: the model was never exported, or imgclf.json is unreadable)."""
    from imgclf import checksums

    try:
        meta = checksums.read_json(Path(model_dir) / META_FILE)
    except Exception:  # noqa: BLE001 - the artifact loader reports a bad imgclf.json with its own message
        return None
    record = meta.get(RECORD_KEY) if isinstance(meta, dict) else None
    return record if isinstance(record, dict) else None


def check_servable(model_dir: str | Path, requested: str = "auto") -> None:
    """Without torch (the CPU serving image) only an exported engine can serve: say so before the server starts,
    rather than after its workers have failed to load. Raises UserError naming what is missing and what to do."""
    from imgclf.errors import UserError

    if runtime_installed(EAGER):
        return
    kept = validated(read_record(model_dir))
    usable = [n for n, entry in kept.items() if (Path(model_dir) / str(entry.get("file", ""))).is_file()]
    if requested == EAGER:
        raise UserError(
            "IMGCLF_ENGINE=eager needs PyTorch, which this image (the torch-free CPU flavour) does not have: use "
            "auto, onnx or int8, or the imgclf-serve image (with torch) for the eager model."
        )
    if not usable or not runtime_installed(ONNX):
        raise UserError(
            f"{model_dir} has no exported inference engine (model.onnx / model.int8.onnx validated in imgclf.json), "
            "and this image (the torch-free CPU flavour) cannot run model.pt. Train with export-engines on (the "
            "default) or run `imgclf export --model-dir DIR --data DATA` on the model, or serve it with the "
            "imgclf-serve image (with torch)."
        )


def validated(record: dict | None) -> dict[str, dict]:
    """The engines the export kept (validated against eager), by name."""
    return dict((record or {}).get("engines", {}))


def choose_engine(requested: str, record: dict | None, device: str = "cpu") -> str:
    """The engine to load for `requested` (auto|eager|onnx|int8), given what the export validated.

    auto on CPU: the validated engine (eager included) with the lowest recorded p50 latency among those whose
    runtime is installed. On a GPU the recorded latencies (CPU) say nothing, so auto is eager unless eager cannot
    run (no torch), then onnx. An explicit engine that was not validated or whose runtime is missing falls back to
    eager with a warning.
    """
    requested = (requested or "auto").strip().lower()
    if requested not in REQUESTS:
        raise ValueError(f"Unknown engine {requested!r}; one of {', '.join(REQUESTS)}")
    kept = validated(record)
    runnable = {n: r for n, r in kept.items() if n in ENGINE_NAMES and runtime_installed(n)}
    if requested == "auto":
        if device.startswith("cuda"):
            if runtime_installed(EAGER):
                return EAGER
            return ONNX if ONNX in runnable else _no_engine(kept)
        candidates = dict(runnable)
        if runtime_installed(EAGER):
            eager_p50 = (record or {}).get("eager", {}).get("p50_ms", float("inf"))
            candidates[EAGER] = {"p50_ms": eager_p50}
        if not candidates:
            return _no_engine(kept)
        return min(candidates, key=lambda n: (candidates[n].get("p50_ms", float("inf")), n != EAGER))
    if requested == EAGER or requested in runnable:
        return requested
    reason = "was not validated by the export" if requested not in kept else "needs onnxruntime, not installed"
    log.warning("Engine %s %s: falling back to eager", requested, reason)
    return EAGER


def _no_engine(kept: dict) -> str:
    raise EngineUnavailable(
        f"No engine can run here: torch is not installed and the validated engines ({', '.join(kept) or 'none'}) "
        "need onnxruntime. Export the model (imgclf export) or use the image with torch."
    )


def load_engine(
    model_dir: str | Path,
    record: dict | None,
    requested: str = "auto",
    device: str = "cpu",
    threads: int | None = None,
) -> Engine:
    """Choose (see `choose_engine`) and load; a chosen engine that fails to load falls back to eager, warning."""
    name = choose_engine(requested, record, device)
    if name != EAGER:
        entry = validated(record)[name]
        try:
            engine = OnnxEngine.load(Path(model_dir) / entry["file"], name, device, threads, entry.get("sha256"))
            log.info("Engine %s (%s) on %s", name, entry["file"], engine.device)
            return engine
        except EngineUnavailable as exc:
            if not runtime_installed(EAGER):
                raise
            log.warning("Engine %s cannot be used (%s): falling back to eager", name, exc)
    if not runtime_installed(EAGER):
        return _no_engine(validated(record))
    log.info("Engine eager (model.pt) on %s", device)
    return EagerEngine.load(model_dir, device, threads)
