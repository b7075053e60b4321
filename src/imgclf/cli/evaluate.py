"""`imgclf evaluate`: a model directory or model.tar.gz on a test channel -> evaluation.json (+ the PNG).

Defaults are the SageMaker Processing contract (imgclf.processing_contract), so the train image runs it as the
pipeline's evaluation step with no argument: `docker run imgclf-train:latest evaluate`.
"""

from __future__ import annotations

import argparse
import json

from imgclf.processing_contract import MODEL_INPUT, OUTPUT, TEST_INPUT


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        default=str(MODEL_INPUT),
        help="Model directory, model.tar.gz, or a folder holding one (default: %(default)s).",
    )
    parser.add_argument("--data", default=str(TEST_INPUT), help="Test channel (default: %(default)s).")
    parser.add_argument("--out", default=str(OUTPUT), help="Where evaluation.json goes (default: %(default)s).")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--bootstrap",
        type=int,
        default=100,
        help="Bootstrap resamples for the metrics' standard deviations (0: none; default: %(default)s).",
    )


def run(args: argparse.Namespace) -> int:
    from imgclf.model_evaluation import GROUP, evaluate

    doc = evaluate(args.model, args.data, args.out, batch_size=args.batch_size, bootstrap=args.bootstrap)
    summary = {name: m["value"] for name, m in doc[GROUP].items() if name != "confusion_matrix"}
    print(json.dumps({"count": doc["dataset"]["item_count"], **summary}), flush=True)
    return 0
