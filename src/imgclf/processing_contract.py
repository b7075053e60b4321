"""The container side of the SageMaker Processing contract for `imgclf evaluate` (torch-free).

A processing job mounts each ProcessingInput at its LocalPath and uploads each ProcessingOutput's LocalPath when
the container exits. The evaluation step of the pipeline (imgclf.sagemaker.pipeline) and `docker run
imgclf-train:latest evaluate` agree on these paths, so they live here, importable without torch:

  /opt/ml/processing/input/model   the training job's model.tar.gz (or an extracted model directory)
  /opt/ml/processing/input/test    the test channel (any channel format the trainer reads)
  /opt/ml/processing/output        evaluation.json + confusion_matrix.png (the pipeline's property file)

`resolve_model` turns what was mounted (a model directory, a model.tar.gz, or a folder holding exactly one
model.tar.gz) into a model directory; anything else is a UserError that says what was found.
"""

from __future__ import annotations

import tarfile
from pathlib import Path

from imgclf.errors import UserError

PROCESSING_ROOT = Path("/opt/ml/processing")
MODEL_INPUT = PROCESSING_ROOT / "input" / "model"
TEST_INPUT = PROCESSING_ROOT / "input" / "test"
OUTPUT = PROCESSING_ROOT / "output"

# The names the pipeline's ProcessingInputs/Output and PropertyFile use.
MODEL_INPUT_NAME = "model"
TEST_INPUT_NAME = "test"
OUTPUT_NAME = "evaluation"

# evaluation.json (imgclf.model_evaluation writes it): SageMaker's model-quality group, and the metrics the
# pipeline's quality gate may compare with its threshold (all "higher is better"), read with JsonGet.
EVALUATION_FILE = "evaluation.json"
EVALUATION_GROUP = "multiclass_classification_metrics"
GATE_METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "weighted_f1", "auc")

MODEL_TARBALL = "model.tar.gz"
META_FILE = "imgclf.json"  # the artifact's metadata file: its presence marks a model directory


def _safe_members(t: tarfile.TarFile, tarball: Path) -> list[tarfile.TarInfo]:
    """The members, refusing links and paths that leave the target (what filter="data" does on Pythons that
    have it; the images' Debian Python 3.11.2 does not)."""
    members = t.getmembers()
    for m in members:
        parts = Path(m.name).parts
        if m.name.startswith("/") or ".." in parts or m.issym() or m.islnk() or m.isdev():
            raise UserError(f"--model {tarball}: refusing the archive member {m.name!r} (a link or outside path).")
    return members


def _extract(tarball: Path, into: Path) -> Path:
    try:
        with tarfile.open(tarball) as t:
            if hasattr(tarfile, "data_filter"):
                t.extractall(into, filter="data")
            else:
                t.extractall(into, members=_safe_members(t, tarball))  # noqa: S202 (checked above)
    except (tarfile.TarError, OSError) as exc:
        raise UserError(f"--model {tarball} is not a readable model.tar.gz: {exc}") from None
    if not (into / META_FILE).is_file():
        raise UserError(f"--model {tarball} holds no {META_FILE}: it is not an imgclf model.tar.gz.")
    return into


def gate_json_path(metric: str) -> str:
    """Where a gate metric's value sits in evaluation.json (the JsonGet path)."""
    if metric not in GATE_METRICS:
        raise UserError(f"The quality gate metric must be one of {', '.join(GATE_METRICS)}; got {metric!r}.")
    return f"{EVALUATION_GROUP}.{metric}.value"


def resolve_model(path: str | Path, scratch: str | Path) -> Path:
    """A model directory from PATH: the directory itself, or PATH (or PATH/model.tar.gz) extracted into scratch."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"--model {path} does not exist (the processing job mounts the model at {MODEL_INPUT}).")
    if path.is_file():
        return _extract(path, Path(scratch))
    if (path / META_FILE).is_file():
        return path
    if (path / MODEL_TARBALL).is_file():
        return _extract(path / MODEL_TARBALL, Path(scratch))
    tarballs = sorted(path.rglob("*.tar.gz"))
    if len(tarballs) == 1:
        return _extract(tarballs[0], Path(scratch))
    found = ", ".join(p.name for p in sorted(path.iterdir())[:10]) or "nothing"
    if not tarballs:
        raise UserError(
            f"--model {path} is neither a model directory ({META_FILE} inside) nor holds a "
            f"{MODEL_TARBALL}; found: {found}."
        )
    raise UserError(f"--model {path} holds {len(tarballs)} .tar.gz files; pass the one to evaluate.")
