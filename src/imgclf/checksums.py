"""sha256 of the model directory's files: recorded in imgclf.json when the artifact is written, verified before
anything loads it (the worker and `imgclf serve`, which checks before starting MMS). Torch-free.

A changed or truncated model.pt / index_to_name.json is refused with the file's name: a model directory arrives
from S3 (model.tar.gz) or a volume, and serving a silently altered model is worse than not starting.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

from imgclf.errors import UserError

KEY = "sha256"  # imgclf.json's field: {"model.pt": "<hex>", "index_to_name.json": "<hex>"}
MAX_JSON_BYTES = 10 << 20  # imgclf.json / index_to_name.json: class names, not data


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def record(model_dir: Path, names: Iterable[str]) -> dict[str, str]:
    return {name: sha256_file(Path(model_dir) / name) for name in names}


def read_json(path: Path) -> object:
    """A small JSON file of the artifact, refused (not loaded) when it is implausibly large or not JSON."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise UserError(f"{path} not found: {path.parent} is not an imgclf model directory.") from None
    if size > MAX_JSON_BYTES:
        raise UserError(f"{path} is {size:,} bytes; an imgclf artifact's JSON files are at most {MAX_JSON_BYTES:,}.")
    try:
        return json.loads(path.read_bytes())
    except (ValueError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} is not valid JSON: {exc}") from None


def verify(model_dir: Path, recorded: object) -> bool:
    """Check every file named in imgclf.json's sha256 record; False when the artifact predates checksums."""
    if recorded is None:
        return False
    if not isinstance(recorded, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in recorded.items()
    ):
        raise UserError(f"{model_dir}/imgclf.json: '{KEY}' must map file names to hex digests.")
    for name, expected in recorded.items():
        path = Path(model_dir) / name
        if Path(name).name != name:
            raise UserError(f"{model_dir}/imgclf.json: '{KEY}' names {name!r}, not a file of the model directory.")
        if not path.is_file():
            raise UserError(f"{path} is missing (imgclf.json records its sha256).")
        if sha256_file(path) != expected:
            raise UserError(
                f"{path} does not match the sha256 recorded in imgclf.json: the file was changed or truncated "
                "after training. Re-deploy the training job's model.tar.gz."
            )
    return True
