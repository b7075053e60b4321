"""Optimised inference engines next to model.pt, each kept only if it predicts what the eager model predicts.

    record = export_engines(model_dir, valid_dir, calibration_dir)

Candidates (files written beside model.pt):
    onnx   model.onnx       torch.onnx export (fp32, dynamic batch axis), run by ONNX Runtime
    int8   model.int8.onnx  ONNX Runtime static quantization of model.onnx: QDQ, per-channel int8 weights,
                            uint8 activations calibrated (MinMax) on up to CALIBRATION_IMAGES training images
    fp16   (model.pt)       the eager model in half precision, channels_last: a CUDA engine, so a candidate only
                            when the export runs where a CUDA device is (training on a GPU instance); on a CPU it
                            is recorded as rejected with that reason

Each candidate runs on the validation images next to eager PyTorch. It is kept only when its top-1 agrees with
eager on >= MIN_AGREEMENT of them and its accuracy is within MAX_ACCURACY_DROP of eager's; otherwise its file is
deleted and the reason logged (and recorded under "rejected"). The p50 latency of one image (batch 1, the
preprocessed tensor: the engine's own cost) is measured for eager and every candidate in interleaved rounds, so
a busy machine slows them alike. With a CUDA device the engines that run on it (eager fp32 channels_last, fp16,
and onnx when ONNX Runtime has its CUDA provider) are timed there as well ("cuda_p50_ms"), for a GPU server's choice.

The record is written into imgclf.json (its "export" entry, atomically) and returned; serving reads it there
(`engines.read_record`) for `engines.choose_engine`. A re-export replaces it; a retrained model.pt comes with a
fresh imgclf.json without one, so engines exported from older weights are never chosen. The record:
    {"eager": {"accuracy", "p50_ms", "size_bytes", ["cuda_p50_ms"]},
     "engines": {name: {"file", "sha256", "agreement", "accuracy", "p50_ms", "p95_ms", "size_bytes", ...}},
     "rejected": {name: reason}, "validation": {"images", "calibration_images", "threads", "device", ["gpu"]}}
(fp16 has "cuda_p50_ms" and no CPU "p50_ms": it is never a CPU engine.)
"""

from __future__ import annotations

import copy
import json
import logging
import os
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from imgclf.checksums import sha256_file
from imgclf.errors import UserError
from imgclf.serving.engines import (
    CUDA_P50,
    EAGER,
    FP16,
    INT8,
    META_FILE,
    ONNX,
    ONNX_INPUT,
    RECORD_KEY,
    EagerEngine,
    OnnxEngine,
    onnx_cuda_available,
)
from imgclf.serving.preprocess import Preprocessing, Preprocessor
from imgclf.system import cpu_count

log = logging.getLogger(__name__)
# The exporter's optimiser logs every pass at INFO (a dozen lines per export in a training job's log): keep warnings.
for _noisy in ("onnxscript", "onnx_ir"):
    logging.getLogger(_noisy).setLevel(logging.WARNING)

ONNX_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
CANDIDATES = (ONNX, INT8, FP16)
ONNX_FILES = {ONNX: ONNX_FILE, INT8: INT8_FILE}  # the candidates with a file of their own
MIN_AGREEMENT = 0.995
MAX_ACCURACY_DROP = 0.005
CALIBRATION_IMAGES = 300
MAX_VALIDATION_IMAGES = 2000
OPSET = 18
LATENCY_RUNS = 40

Predict = Callable[[np.ndarray], np.ndarray]
# Where images come from: an ImageFolder directory, or (samples, reader) as training holds them: (key, class index)
# pairs and the function opening a key (None: keys are file paths), for any channel format.
Source = str | Path | tuple[Sequence[tuple[str, int]], Callable[[str], Any] | None]


# ---- images -----------------------------------------------------------------------------------------------------


def load_images(
    source: Source, classes: Sequence[str], preprocessor: Preprocessor, limit: int, channel: str
) -> tuple[np.ndarray, np.ndarray]:
    """Up to `limit` images of a channel, spread evenly over it (so every class is represented), preprocessed
    exactly as serving does: (N, 3, S, S) float32 and (N,) labels. Unreadable images are skipped, as training
    skips them."""
    from imgclf.channels import scan_image_folder
    from imgclf.images import open_rgb

    if isinstance(source, str | Path):
        samples, reader = scan_image_folder(source, classes=list(classes), channel=channel).samples, None
    else:
        samples, reader = source
    reader = reader or open_rgb
    if len(samples) > limit:
        picks = np.linspace(0, len(samples) - 1, limit).round().astype(int)
        samples = [samples[i] for i in picks]
    opened, labels = [], []
    for key, label in samples:
        try:
            opened.append(reader(key))
        except (OSError, ValueError, SyntaxError, KeyError) as exc:
            log.warning("Export: skipping %s: %s", key, exc)
            continue
        labels.append(label)
    if not opened:
        raise UserError(f"No readable {channel} image to validate the exported engines on.")
    return preprocessor.batch(opened), np.array(labels, dtype=np.int64)


def save_record(model_dir: Path, record: dict[str, Any]) -> None:
    """The record into imgclf.json (its RECORD_KEY entry), through a temp file: a crash leaves the old file."""
    path = model_dir / META_FILE
    meta = json.loads(path.read_text())
    meta[RECORD_KEY] = record
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(meta, indent=1))
    os.replace(tmp, path)


# ---- candidates -------------------------------------------------------------------------------------------------


def export_onnx(model: Any, image_size: int, path: Path) -> str:
    """torch.onnx.export with a dynamic batch axis; the torch.export-based exporter (offline, onnxscript), else the
    TorchScript-based one if that fails for this architecture. Returns the exporter used."""
    import torch

    example = (torch.zeros(1, 3, image_size, image_size),)
    tmp = path.with_name(path.name + ".tmp")

    def export(**options: Any) -> None:  # the one call: the two exporters differ only in these options
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, example, str(tmp), input_names=[ONNX_INPUT], output_names=["logits"], **options)

    try:
        export(
            dynamo=True,
            dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=4096)},),
            opset_version=OPSET,
            external_data=False,
            verbose=False,
        )
        exporter = "dynamo"
    except Exception as exc:  # noqa: BLE001 - any failure of the new exporter: try the old one
        log.warning("torch.export-based ONNX export failed (%s); using the TorchScript-based exporter", exc)
        export(dynamo=False, dynamic_axes={ONNX_INPUT: {0: "batch"}, "logits": {0: "batch"}}, opset_version=17)
        exporter = "torchscript"
    os.replace(tmp, path)
    return exporter


class _Calibration:
    """onnxruntime.quantization.CalibrationDataReader over preprocessed images, a few at a time."""

    def __init__(self, images: np.ndarray, batch: int = 8) -> None:
        self.chunks = iter([images[i : i + batch] for i in range(0, len(images), batch)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        chunk = next(self.chunks, None)
        return None if chunk is None else {ONNX_INPUT: chunk}


def quantize_int8(onnx_path: Path, path: Path, calibration: np.ndarray) -> None:
    """Static int8 quantization (QDQ, per-channel weights), after ONNX Runtime's recommended pre-processing
    (shape inference and graph optimisation, which folds BatchNorm into the convolutions)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(_Calibration, CalibrationDataReader):
        pass

    prepared = path.with_name(path.name + ".pre.tmp")
    tmp = path.with_name(path.name + ".tmp")
    try:
        quant_pre_process(str(onnx_path), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(tmp),
            Reader(calibration),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        )
        os.replace(tmp, path)
    finally:
        prepared.unlink(missing_ok=True)
        tmp.unlink(missing_ok=True)


# ---- validation and timing --------------------------------------------------------------------------------------


def predictions(predict: Predict, images: np.ndarray, batch: int = 32) -> np.ndarray:
    return np.concatenate([predict(images[i : i + batch]).argmax(axis=1) for i in range(0, len(images), batch)])


def latencies_ms(engines: dict[str, Predict], image: np.ndarray, runs: int = LATENCY_RUNS) -> dict[str, np.ndarray]:
    """Batch-1 latency of each engine, interleaved run by run (after a warm-up of each)."""
    one = np.ascontiguousarray(image[None], dtype=np.float32)
    for predict in engines.values():
        for _ in range(3):
            predict(one)
    times: dict[str, list[float]] = {name: [] for name in engines}
    for _ in range(runs):
        for name, predict in engines.items():
            start = time.perf_counter()
            predict(one)
            times[name].append((time.perf_counter() - start) * 1000)
    return {name: np.asarray(t) for name, t in times.items()}


def validate(
    predict: Predict, images: np.ndarray, labels: np.ndarray, reference: np.ndarray, eager_accuracy: float
) -> tuple[dict[str, float], str | None]:
    """A candidate's top-1 agreement with eager (`reference`) and accuracy, and the `verdict` on them."""
    predicted = predictions(predict, images)
    agreement = float((predicted == reference).mean())
    accuracy = float((predicted == labels).mean())
    return {"agreement": round(agreement, 5), "accuracy": round(accuracy, 5)}, verdict(
        agreement, accuracy, eager_accuracy
    )


def default_device() -> str:
    """cuda when torch sees a CUDA device (the export then validates fp16 and times the engines there too)."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def verdict(agreement: float, accuracy: float, eager_accuracy: float) -> str | None:
    """None when a candidate may be kept, else the reason it may not."""
    if agreement < MIN_AGREEMENT:
        return f"top-1 agreement with eager {agreement:.2%} < {MIN_AGREEMENT:.1%}"
    if abs(accuracy - eager_accuracy) > MAX_ACCURACY_DROP:
        return f"accuracy {accuracy:.2%} differs from eager's {eager_accuracy:.2%} by more than {MAX_ACCURACY_DROP:.1%}"
    return None


# ---- the export -------------------------------------------------------------------------------------------------


def export_engines(
    model_dir: str | Path,
    valid_dir: Source,
    calibration_dir: Source | None = None,
    candidates: Sequence[str] = CANDIDATES,
    threads: int | None = None,
    max_valid: int = MAX_VALIDATION_IMAGES,
    calibration_images: int = CALIBRATION_IMAGES,
    latency_runs: int = LATENCY_RUNS,
    device: str | None = None,
) -> dict[str, Any]:
    """Export, validate and time the candidates; keep the ones that pass; record them in imgclf.json. See the
    module docstring. `valid_dir` / `calibration_dir`: ImageFolder directories or (samples, reader). `device`:
    cpu, or a CUDA device to validate fp16 and time the engines on (default: cuda when there is one)."""
    import torch

    from imgclf.artifact import WEIGHTS_FILE, load_artifact

    unknown = sorted(set(candidates) - set(CANDIDATES))
    if unknown:
        raise UserError(f"Unknown engine(s) {', '.join(unknown)}; candidates are {', '.join(CANDIDATES)}.")
    model_dir = Path(model_dir)
    device = device or default_device()
    on_cuda = device.startswith("cuda")
    threads = threads or cpu_count()
    torch.set_num_threads(threads)
    artifact = load_artifact(model_dir, "cpu")
    classes = [artifact.index_to_name[i] for i in range(artifact.meta.num_classes)]
    preprocessor = Preprocessor(Preprocessing.from_meta(artifact.meta), draft=False)
    images, labels = load_images(valid_dir, classes, preprocessor, max_valid, "valid")
    eager = EagerEngine(artifact.model, "cpu")
    reference = predictions(eager.predict, images)
    eager_accuracy = float((reference == labels).mean())
    log.info("Eager: accuracy %.4f on %d validation images", eager_accuracy, len(labels))

    onnx_candidates = [name for name in candidates if name in ONNX_FILES]
    kept: dict[str, dict[str, Any]] = {}
    rejected: dict[str, str] = {}
    engines: dict[str, Predict] = {EAGER: eager.predict}
    n_calibration = 0
    exporter = None
    if onnx_candidates:
        try:
            exporter = export_onnx(artifact.model, artifact.meta.image_size, model_dir / ONNX_FILE)
        except Exception as exc:  # noqa: BLE001 - an architecture the exporters cannot handle: eager only
            for name in onnx_candidates:
                rejected[name] = f"ONNX export failed: {exc}"
    if exporter and INT8 in candidates:
        calibration = images
        if calibration_dir is not None:
            calibration, _ = load_images(calibration_dir, classes, preprocessor, calibration_images, "train")
        else:
            log.warning("No calibration channel: calibrating int8 on the validation images")
        calibration = calibration[:calibration_images]
        n_calibration = len(calibration)
        try:
            quantize_int8(model_dir / ONNX_FILE, model_dir / INT8_FILE, calibration)
        except Exception as exc:  # noqa: BLE001 - recorded as the reason int8 is not kept
            rejected[INT8] = f"quantization failed: {exc}"
    for name in onnx_candidates:
        path = model_dir / ONNX_FILES[name]
        if name in rejected or not path.is_file():
            rejected.setdefault(name, "not exported")
            continue
        engine = OnnxEngine.load(path, name, "cpu", threads)
        scores, reason = validate(engine.predict, images, labels, reference, eager_accuracy)
        if reason is not None:
            rejected[name] = reason
            log.warning("Engine %s not kept: %s", name, reason)
            continue
        engines[name] = engine.predict
        size = path.stat().st_size
        kept[name] = {"file": ONNX_FILES[name], "sha256": sha256_file(path), **scores, "size_bytes": size}
        if name == ONNX:
            kept[name]["exporter"] = exporter
    for name in onnx_candidates:  # a file that was not kept must not be served
        if name in rejected:
            (model_dir / ONNX_FILES[name]).unlink(missing_ok=True)
    if ONNX not in candidates:
        (model_dir / ONNX_FILE).unlink(missing_ok=True)  # only the source of the int8 graph

    gpu_engines: dict[str, Predict] = {}  # the engines that run on the CUDA device, timed there
    if on_cuda:
        gpu_eager = EagerEngine(copy.deepcopy(artifact.model), device)  # fp32, channels_last
        gpu_engines[EAGER] = gpu_eager.predict
        if FP16 in candidates:
            fp16 = gpu_eager.half_copy()
            scores, reason = validate(fp16.predict, images, labels, reference, eager_accuracy)
            if reason is None:
                gpu_engines[FP16] = fp16.predict
                weights = model_dir / WEIGHTS_FILE
                kept[FP16] = {"file": WEIGHTS_FILE, "sha256": sha256_file(weights), **scores, "precision": "fp16"}
            else:
                rejected[FP16] = reason
                log.warning("Engine fp16 not kept: %s", reason)
        if ONNX in kept and onnx_cuda_available():  # onnxruntime-gpu: onnx runs on the GPU too
            gpu_engines[ONNX] = OnnxEngine.load(model_dir / ONNX_FILE, ONNX, device).predict
    elif FP16 in candidates:
        rejected[FP16] = "needs a CUDA device: this export ran on the CPU (export on a GPU instance to validate it)"
        log.info("Engine fp16 not a candidate: %s", rejected[FP16])

    timings = latencies_ms(engines, images[0], latency_runs)
    summary = {name: (float(np.percentile(t, 50)), float(np.percentile(t, 95))) for name, t in timings.items()}
    gpu_p50 = {n: float(np.percentile(t, 50)) for n, t in latencies_ms(gpu_engines, images[0], latency_runs).items()}
    for name, entry in kept.items():
        if name in summary:
            entry["p50_ms"], entry["p95_ms"] = (round(v, 3) for v in summary[name])
        if name in gpu_p50:
            entry[CUDA_P50] = round(gpu_p50[name], 3)
    record = {
        "eager": {
            "file": WEIGHTS_FILE,
            "accuracy": round(eager_accuracy, 5),
            "p50_ms": round(summary[EAGER][0], 3),
            "p95_ms": round(summary[EAGER][1], 3),
            "size_bytes": (model_dir / WEIGHTS_FILE).stat().st_size,
        },
        "engines": kept,
        "rejected": rejected,
        "validation": {
            "images": len(labels),
            "calibration_images": n_calibration,
            "threads": threads,
            "device": device,
            "min_agreement": MIN_AGREEMENT,
            "max_accuracy_drop": MAX_ACCURACY_DROP,
        },
    }
    if on_cuda:
        record["eager"][CUDA_P50] = round(gpu_p50[EAGER], 3)
        record["validation"]["gpu"] = torch.cuda.get_device_name(device)
    save_record(model_dir, record)
    for name, entry in kept.items():
        log.info(
            "Engine %s kept: agreement %.2f%%, accuracy %.4f, p50 %s (eager %s)",
            name,
            100 * entry["agreement"],
            entry["accuracy"],
            _latencies(entry),
            _latencies(record["eager"]),
        )
    return record


def _latencies(entry: dict[str, Any]) -> str:
    """For the log: e.g. "3.10 ms CPU, 0.80 ms CUDA" (what an entry has of the two)."""
    parts = [f"{entry[key]:.2f} ms {kind}" for key, kind in (("p50_ms", "CPU"), (CUDA_P50, "CUDA")) if key in entry]
    return ", ".join(parts)
