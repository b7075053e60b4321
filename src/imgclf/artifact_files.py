"""The artifact's files, checked without torch: present, unchanged since training (imgclf.checksums), and the two
JSON files valid (types, sizes, the class count of index_to_name.json against imgclf.json's head).

`check` is what `imgclf serve` runs before it starts MMS, so a tampered or hand-edited artifact stops the
container in a second with the file named, instead of crash-looping workers until SAGEMAKER_STARTUP_TIMEOUT.
`imgclf.artifact.load_artifact` runs the same checks before it reads any weight.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from imgclf import checksums
from imgclf.errors import UserError

log = logging.getLogger(__name__)

WEIGHTS_FILE = "model.pt"
INDEX_FILE = "index_to_name.json"
META_FILE = "imgclf.json"
ARTIFACT_FILES = (WEIGHTS_FILE, INDEX_FILE, META_FILE)
ARTIFACT_FORMAT = 1


def check_meta(path: Path, raw: object) -> dict[str, Any]:
    """imgclf.json's content with its format, types and ranges checked: it is read before any weight is."""
    if not isinstance(raw, dict):
        raise UserError(f"{path} must hold a JSON object.")
    if raw.get("format") != ARTIFACT_FORMAT:
        raise UserError(f"{path} has artifact format {raw.get('format')}; this imgclf reads {ARTIFACT_FORMAT}.")

    def bad(field: str, why: str) -> UserError:
        return UserError(f"{path}: '{field}' {why} (got {raw.get(field)!r}).")

    if not isinstance(raw.get("arch"), str) or not raw["arch"]:
        raise bad("arch", "must name a torchvision architecture")
    for field, low, high in (("num_classes", 1, 1_000_000), ("image_size", 8, 8192), ("resize_size", 8, 8192)):
        value = raw.get(field)
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise bad(field, f"must be an integer in {low}..{high}")
    for field in ("mean", "std"):
        value = raw.get(field, [0.0, 0.0, 1.0])
        if not (isinstance(value, list | tuple) and len(value) == 3 and all(isinstance(v, int | float) for v in value)):
            raise bad(field, "must be three numbers")
    if any(v <= 0 for v in raw.get("std", [1.0])):
        raise bad("std", "must be positive")
    return raw


def load_index(model_dir: Path, num_classes: int) -> dict[int, str]:
    """index_to_name.json: exactly the classes 0..num_classes-1, each a short name."""
    path = Path(model_dir) / INDEX_FILE
    raw = checksums.read_json(path)
    if not isinstance(raw, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in raw.items()):
        raise UserError(f'{path} must map class indices to names: {{"0": "name", ...}}.')
    try:
        index = {int(k): v for k, v in raw.items()}
    except ValueError:
        raise UserError(f"{path}: every key must be a class index (0, 1, ...).") from None
    if sorted(index) != list(range(num_classes)):
        raise UserError(f"{path} names {len(index)} classes; the model's head has {num_classes} (imgclf.json).")
    if any(len(name) > 1024 for name in index.values()):
        raise UserError(f"{path}: class names are at most 1,024 characters.")
    return index


def verify_files(model_dir: str | Path) -> None:
    """The checksums imgclf.json records, checked."""
    model_dir = Path(model_dir)
    raw = checksums.read_json(model_dir / META_FILE)
    recorded = raw.get(checksums.KEY) if isinstance(raw, dict) else None
    if not checksums.verify(model_dir, recorded):
        log.warning("%s records no checksums (an artifact from before imgclf recorded them): not verified", model_dir)


def check(model_dir: str | Path) -> None:
    """Everything about a model directory that can be checked before torch loads it, each failure naming the file."""
    model_dir = Path(model_dir)
    missing = [name for name in ARTIFACT_FILES if not (model_dir / name).is_file()]
    if missing:
        raise UserError(
            f"{model_dir} is not an imgclf model directory: missing {', '.join(missing)}. Pass --model-dir, or "
            "mount the training job's model.tar.gz contents at /opt/ml/model."
        )
    verify_files(model_dir)
    meta = check_meta(model_dir / META_FILE, checksums.read_json(model_dir / META_FILE))
    load_index(model_dir, meta["num_classes"])
