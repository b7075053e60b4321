"""`imgclf export`: optimised inference engines (ONNX, int8) next to a trained model.pt, each validated against
eager PyTorch on the validation images (imgclf.export); prints the engine record as JSON."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from imgclf.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from imgclf.export import CALIBRATION_IMAGES, CANDIDATES, MAX_VALIDATION_IMAGES

    parser.add_argument("--model-dir", type=Path, required=True, help="The trained model directory (model.pt).")
    parser.add_argument(
        "--data",
        type=Path,
        help="Dataset root with valid/ (validation) and train/ (calibration) ImageFolder channels.",
    )
    parser.add_argument("--valid", type=Path, help="Validation channel (overrides DATA/valid).")
    parser.add_argument(
        "--calibration", type=Path, help="Calibration channel for int8 (default DATA/train, else the validation one)."
    )
    parser.add_argument(
        "--engines",
        default=",".join(CANDIDATES),
        help=f"Comma-separated candidates to try (default {','.join(CANDIDATES)}).",
    )
    parser.add_argument("--threads", type=int, help="CPU threads for the latency measurement (default: all).")
    parser.add_argument(
        "--device",
        help="cpu, or a CUDA device to validate fp16 and time the engines on as well (default: cuda if present).",
    )
    parser.add_argument("--max-valid", type=int, default=MAX_VALIDATION_IMAGES, help="Validation images used.")
    parser.add_argument("--calibration-images", type=int, default=CALIBRATION_IMAGES, help="Calibration images used.")
    parser.add_argument("--output", type=Path, help="Also write the engine record (JSON) to this file.")


def run(args: argparse.Namespace) -> int:
    from imgclf.export import export_engines

    data = args.data
    valid = args.valid or (data / "valid" if data is not None else None)
    if valid is None or not valid.is_dir():
        raise UserError("Give the validation images: --valid DIR or --data DIR holding valid/.")
    calibration = args.calibration or (data / "train" if data is not None and (data / "train").is_dir() else None)
    record = export_engines(
        args.model_dir,
        valid,
        calibration,
        candidates=[e.strip() for e in args.engines.split(",") if e.strip()],
        threads=args.threads,
        max_valid=args.max_valid,
        calibration_images=args.calibration_images,
        device=args.device,
    )
    text = json.dumps(record, indent=1)
    if args.output is not None:
        args.output.write_text(text + "\n")
    print(text, file=sys.stdout, flush=True)
    return 0
