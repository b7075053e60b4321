"""Inference engines: one interface over eager PyTorch and ONNX Runtime, and the choice between them.

    engine = load_engine(model_dir, meta, record, requested="auto", device="cpu", threads=4)
    probs = engine.predict(batch)          # (N, 3, S, S) float32 -> (N, num_classes) float32 probabilities

`record` is what `imgclf.export.export_engines` wrote into imgclf.json (its "export" entry, `read_record`): for
each engine kept, its file, sha256 and the p50 latency measured on the validation images (`p50_ms` on the CPU, and
`cuda_p50_ms` when the export ran where a CUDA device was); an engine not in it was not validated and is never
chosen. `auto` picks the fastest validated engine that can run here, by the latencies measured on the same kind of
device; a requested engine that cannot be used (not validated, file missing or changed, runtime not installed)
falls back to eager with a warning.

The engines: eager (model.pt in fp32; on CUDA in channels_last memory format, exact up to float reassociation),
fp16 (model.pt in half precision and channels_last, CUDA only: validated by an export that ran on a GPU), onnx
(model.onnx, ONNX Runtime: its CUDA provider on a GPU when onnxruntime-gpu is installed) and int8 (model.int8.onnx,
a CPU engine).

This module imports neither torch nor onnxruntime at import time: the CPU serving image has no torch, and
EagerEngine imports it only when it is loaded.
"""

from __future__ import annotations

import copy
import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from imgclf.checksums import sha256_file

log = logging.getLogger(__name__)

EAGER = "eager"
FP16 = "fp16"  # the eager model in half precision: CUDA only
ONNX = "onnx"
INT8 = "int8"
ENGINE_NAMES = (EAGER, FP16, ONNX, INT8)
TORCH_ENGINES = (EAGER, FP16)  # run model.pt: need torch
REQUESTS = ("auto", *ENGINE_NAMES)
CUDA_P50 = "cuda_p50_ms"  # a record entry's p50 latency on a CUDA device ("p50_ms": on the CPU)
ONNX_INPUT = "input"  # the exported graph's input name (imgclf.export)
RECORD_KEY = "export"  # imgclf.json's entry holding the export record
META_FILE = "imgclf.json"  # imgclf.artifact.META_FILE (named here: this module never imports the artifact code)


class EngineUnavailable(RuntimeError):
    """The requested engine cannot run here; the reason says why (and `choose_engine` falls back)."""


class Engine(Protocol):
    name: str
    device: str
    precision: str  # fp32, fp16 or int8: logged with the choice

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """(N, 3, S, S) float32 normalised images -> (N, num_classes) float32 probabilities."""
        ...


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits.astype(np.float32, copy=False) - logits.max(axis=1, keepdims=True)
    np.exp(shifted, out=shifted)
    shifted /= shifted.sum(axis=1, keepdims=True)
    return shifted


def runtime_installed(name: str) -> bool:
    """Whether the runtime an engine needs is importable (torch for eager/fp16, onnxruntime for onnx/int8)."""
    module = "torch" if name in TORCH_ENGINES else "onnxruntime"
    return importlib.util.find_spec(module) is not None


def onnx_cuda_available() -> bool:
    """Whether ONNX Runtime here has its CUDA provider (onnxruntime-gpu)."""
    if not runtime_installed(ONNX):
        return False
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


@dataclass(frozen=True)
class Runtimes:
    """What this process can run engines with: `choose_engine` takes it, so a test can say what is installed."""

    torch: bool
    onnxruntime: bool
    onnx_cuda: bool = False  # ONNX Runtime's CUDA provider

    @classmethod
    def installed(cls, device: str = "cpu") -> Runtimes:
        """What is installed; the CUDA provider is looked for only for a CUDA device (it imports onnxruntime,
        which an eager worker on a CPU never needs in memory)."""
        return cls(
            runtime_installed(EAGER), runtime_installed(ONNX), device.startswith("cuda") and onnx_cuda_available()
        )

    def can_run(self, name: str, device: str) -> bool:
        if name == FP16:
            return self.torch and device.startswith("cuda")
        return self.torch if name == EAGER else self.onnxruntime


class EagerEngine:
    """The torch model from model.pt (the artifact loader), softmax in float32.

    On CUDA the model runs in channels_last memory format (the layout cuDNN's fastest convolutions use; the same
    arithmetic, up to the order of float additions), and in half precision for the fp16 engine. The model is
    converted in place.
    """

    def __init__(
        self,
        model: Any,
        device: str,
        max_batch: int = 64,
        *,
        half: bool = False,
        channels_last: bool | None = None,
    ) -> None:
        import torch

        self.channels_last = device.startswith("cuda") if channels_last is None else channels_last
        self.dtype = torch.float16 if half else torch.float32
        self.name = FP16 if half else EAGER
        self.precision = "fp16" if half else "fp32"
        self.memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        self.model = model.to(device, dtype=self.dtype, memory_format=self.memory_format)
        self.device = device
        self.max_batch = max_batch

    @classmethod
    def load(
        cls, model_dir: str | Path, device: str = "cpu", threads: int | None = None, half: bool = False
    ) -> EagerEngine:
        import torch

        from imgclf.artifact import load_artifact

        if threads and not device.startswith("cuda"):
            torch.set_num_threads(threads)
        return cls(load_artifact(model_dir, device).model, device, half=half)

    def half_copy(self) -> EagerEngine:
        """An fp16 engine on a copy of this one's model (which stays as it is)."""
        return EagerEngine(copy.deepcopy(self.model), self.device, self.max_batch, half=True)

    def predict(self, batch: np.ndarray) -> np.ndarray:
        import torch

        outputs = []
        with torch.inference_mode():
            for chunk in torch.split(torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)), self.max_batch):
                chunk = chunk.to(self.device, self.dtype, non_blocking=True, memory_format=self.memory_format)
                outputs.append(torch.softmax(self.model(chunk).float(), dim=1).cpu().numpy())
        return np.concatenate(outputs)


class OnnxEngine:
    """An ONNX graph (fp32 or int8 QDQ) on ONNX Runtime: the CUDA provider on a GPU device when onnxruntime-gpu
    is installed, else the CPU provider with `threads` intra-op threads (one inter-op thread: one request at a
    time per worker, parallelism comes from the workers)."""

    def __init__(self, session: Any, name: str, device: str) -> None:
        self.session = session
        self.name = name
        self.device = device
        self.precision = "int8" if name == INT8 else "fp32"
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
    usable = [
        n
        for n, entry in kept.items()
        if n not in TORCH_ENGINES and (Path(model_dir) / str(entry.get("file", ""))).is_file()
    ]
    if requested in TORCH_ENGINES:
        raise UserError(
            f"IMGCLF_ENGINE={requested} needs PyTorch, which this image (the torch-free CPU flavour) does not have: "
            "use auto, onnx or int8, or the imgclf-serve image (with torch) for the eager model."
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


def choose_engine(requested: str, record: dict | None, device: str = "cpu", runtimes: Runtimes | None = None) -> str:
    """The engine to load for `requested` (auto|eager|fp16|onnx|int8), given what the export validated and what
    `runtimes` (default: what is installed here) can run.

    auto on CPU: the validated engine (eager included) with the lowest recorded CPU p50 latency among those whose
    runtime is installed. auto on CUDA: see `_auto_on_cuda`. An explicit engine that was not validated or cannot
    run here falls back to eager with a warning.
    """
    requested = (requested or "auto").strip().lower()
    if requested not in REQUESTS:
        raise ValueError(f"Unknown engine {requested!r}; one of {', '.join(REQUESTS)}")
    runtimes = runtimes or Runtimes.installed(device)
    kept = validated(record)
    runnable = {n: r for n, r in kept.items() if n in ENGINE_NAMES and runtimes.can_run(n, device)}
    if requested == "auto":
        if device.startswith("cuda"):
            return _auto_on_cuda(record, runnable, runtimes)
        candidates = dict(runnable)
        if runtimes.torch:
            eager_p50 = (record or {}).get("eager", {}).get("p50_ms", float("inf"))
            candidates[EAGER] = {"p50_ms": eager_p50}
        if not candidates:
            return _no_engine(kept)
        return min(candidates, key=lambda n: (candidates[n].get("p50_ms", float("inf")), n != EAGER))
    if requested == EAGER or requested in runnable:
        return requested
    if requested not in kept:
        reason = "was not validated by the export"
    elif requested == FP16:
        reason = f"needs torch and a CUDA device (here: {device})"
    else:
        reason = "needs onnxruntime, not installed"
    log.warning("Engine %s %s: falling back to eager", requested, reason)
    return EAGER


def _auto_on_cuda(record: dict | None, runnable: dict[str, dict], runtimes: Runtimes) -> str:
    """auto on a GPU: among the engines that run on it (eager with torch; fp16 if validated; onnx if validated and
    ONNX Runtime has its CUDA provider), the fastest by the latencies the export measured on CUDA; without those
    (the export ran on a CPU), fp16 if validated, else eager. No torch and no CUDA provider: onnx on the CPU."""
    on_gpu = {n: r for n, r in runnable.items() if n == FP16 or (n == ONNX and runtimes.onnx_cuda)}
    if runtimes.torch:
        on_gpu[EAGER] = dict((record or {}).get("eager", {}))
    if not on_gpu:
        return ONNX if ONNX in runnable else _no_engine(validated(record))
    timed = {n: r[CUDA_P50] for n, r in on_gpu.items() if CUDA_P50 in r}
    if timed:
        return min(timed, key=lambda n: (timed[n], n != EAGER))
    return next(name for name in (FP16, EAGER, ONNX) if name in on_gpu)


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
    if name not in TORCH_ENGINES:
        entry = validated(record)[name]
        try:
            engine = OnnxEngine.load(Path(model_dir) / entry["file"], name, device, threads, entry.get("sha256"))
            log.info("Engine %s (%s, %s) on %s", name, entry["file"], engine.precision, engine.device)
            return engine
        except EngineUnavailable as exc:
            if not runtime_installed(EAGER):
                raise
            log.warning("Engine %s cannot be used (%s): falling back to eager", name, exc)
    if not runtime_installed(EAGER):
        return _no_engine(validated(record))
    engine = EagerEngine.load(model_dir, device, threads, half=name == FP16)
    layout = ", channels_last" if engine.channels_last else ""
    log.info("Engine %s (model.pt, %s%s) on %s", engine.name, engine.precision, layout, device)
    return engine
