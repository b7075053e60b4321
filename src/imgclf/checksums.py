"""sha256 of the model directory's files: recorded in imgclf.json when the artifact is written, verified before
anything loads it (the worker and `imgclf serve`, which checks before starting MMS). Torch-free.

A changed or truncated model.pt / index_to_name.json is refused with the file's name: a model directory arrives
from S3 (model.tar.gz) or a volume, and serving a silently altered model is worse than not starting.

Pretrained weights baked into the train image are checked the same way: at build time against the expected sha256
(`python -m imgclf.checksums bake DIR [SHA256]`, Dockerfile.train), which is then recorded in DIR/SHA256SUMS, and
again before training loads them (`verify_pretrained`).
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from collections.abc import Iterable
from pathlib import Path

from imgclf.errors import UserError

KEY = "sha256"  # imgclf.json's field: {"model.pt": "<hex>", "index_to_name.json": "<hex>"}
MAX_JSON_BYTES = 10 << 20  # imgclf.json / index_to_name.json: class names, not data
SUMS = "SHA256SUMS"  # beside baked weights: `sha256sum` format, "<hex>  <file name>" per line
# torchvision names its weight files <arch>-<first hex digits of the file's sha256>.pth (resnet18-f37072fd.pth),
# as torch.hub's check_hash reads them: the published checksum of a file fetched from download.pytorch.org.
TORCHVISION_NAME = re.compile(r"-([0-9a-f]{8,64})\.pth?$")
_HEX = re.compile(r"^[0-9a-f]{8,64}$")


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


# ---- pretrained weights ----------------------------------------------------------------------------------------


def _check_weights(path: Path, expected: str, source: str) -> str:
    """The file's sha256, or a UserError when it does not start with `expected` (a full digest or a prefix)."""
    actual = sha256_file(path)
    if not actual.startswith(expected):
        where = f"{path} (-> {path.resolve()})" if path.is_symlink() else str(path)
        raise UserError(
            f"pretrained weights {where} have sha256 {actual}, but {source} expects {expected}: the file is corrupt, "
            "truncated or not the one meant. Fetch it again (or fix the expected checksum)."
        )
    return actual


def _listed(path: Path) -> str | None:
    """The sha256 that SHA256SUMS beside the (link-resolved) file records for it, if any."""
    sums = path.resolve().parent / SUMS
    if not sums.is_file():
        return None
    for line in sums.read_text().splitlines():
        digest, _, name = line.partition("  ")
        if name == path.resolve().name:
            return digest
    return None


def verify_pretrained(path: Path, *, torchvision_name: bool = False) -> bool:
    """Check a weights file before it is loaded; False when nothing records its checksum.

    Recorded: SHA256SUMS beside the file (written at image build) and, with `torchvision_name` (files in
    torchvision's cache, which keep its names), the hash prefix in the name. A user's own file name is not read as
    a checksum: "model-20240101.pth" would look like one.
    """
    path = Path(path)
    listed = _listed(path)
    if listed is not None:
        _check_weights(path, listed, f"{path.resolve().parent / SUMS} (recorded when the image was built)")
        return True
    named = TORCHVISION_NAME.search(path.name) if torchvision_name else None
    if named:
        _check_weights(path, named.group(1), "torchvision's file name")
        return True
    return False


def bake(directory: Path, expected: str = "") -> list[str]:
    """Image build: verify the weights baked into `directory` and record them in SHA256SUMS; the lines written.

    `expected` (the PRETRAINED_WEIGHTS_SHA256 build argument: a sha256 or its first 8+ hex digits) is required
    unless the file keeps torchvision's name, whose hash prefix then serves. No weights (the default README): no-op.
    """
    directory = Path(directory)
    expected = expected.strip().lower()
    if expected and not _HEX.match(expected):
        raise UserError(f"PRETRAINED_WEIGHTS_SHA256 {expected!r} is not a sha256 (8 to 64 hex digits).")
    files = sorted(p for p in directory.iterdir() if p.is_file() and p.name not in ("README.md", SUMS))
    if not files:
        if expected:
            raise UserError("PRETRAINED_WEIGHTS_SHA256 is set but no PRETRAINED_WEIGHTS file was baked in.")
        return []
    if expected and len(files) > 1:
        raise UserError(f"PRETRAINED_WEIGHTS_SHA256 checks one file; {directory} holds {[p.name for p in files]}.")
    lines = []
    for path in files:
        named = TORCHVISION_NAME.search(path.name)
        if expected:
            digest = _check_weights(path, expected, "PRETRAINED_WEIGHTS_SHA256")
        elif named:
            digest = _check_weights(path, named.group(1), "torchvision's file name")
        else:
            raise UserError(
                f"pretrained weights {path.name} have no checksum to verify: pass --build-arg "
                "PRETRAINED_WEIGHTS_SHA256=<sha256 of the file> (scripts/build_push.sh --pretrained-weights-sha256), "
                "or keep torchvision's file name (<arch>-<hash prefix>.pth)."
            )
        lines.append(f"{digest}  {path.name}")
    (directory / SUMS).write_text("".join(line + "\n" for line in lines))
    return lines


def main(argv: list[str] | None = None) -> int:
    """`python -m imgclf.checksums bake DIR [SHA256]`: the train image's build step (Dockerfile.train)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) not in (2, 3) or args[0] != "bake":
        print("usage: python -m imgclf.checksums bake DIR [SHA256]", file=sys.stderr)
        return 2
    try:
        for line in bake(Path(args[1]), args[2] if len(args) == 3 else ""):
            print(f"verified pretrained weights: {line}")
    except UserError as exc:
        print(f"error: {exc} The image build stops here.", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
