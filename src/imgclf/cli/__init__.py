"""`imgclf <command>`: one thin module per command in this package (parse arguments, call the library, map errors
to exit codes).

A command module exposes `add_arguments(parser)` and `run(args) -> int`; it is imported only when used, so
`imgclf predict` does not pay for importing the trainer (or need smdebug installed).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from imgclf import __version__
from imgclf.errors import UserError

COMMANDS = {
    "sample-data": (
        "imgclf.cli.sample_data",
        "Write the embedded digits sample as ImageFolder train/valid/test.",
    ),
    "train": (
        "imgclf.cli.train",
        "Train on an ImageFolder directory (or the SageMaker /opt/ml contract).",
    ),
    "shard": ("imgclf.cli.shard", "Convert a dataset (imagefolder, hdf5, manifest) into tar shards for streaming."),
    "export": ("imgclf.cli.export", "Export validated ONNX / int8 inference engines beside a trained model."),
    "serve": ("imgclf.cli.serve", "Serve a model directory over the SageMaker HTTP contract (MMS)."),
    "predict": ("imgclf.cli.predict", "Classify images with a running endpoint (local URL or SageMaker)."),
    "tune": (
        "imgclf.cli.tune",
        "Local hyperparameter search (Optuna) over the same space as the SageMaker tuner.",
    ),
    "evaluate": ("imgclf.cli.evaluate", "Evaluate a model (dir or model.tar.gz) on a test channel: evaluation.json."),
    "report": ("imgclf.cli.report", "Debugger-rule and profiler reports from a run's output."),
    "sagemaker": ("imgclf.cli.sagemaker", "Launch training, tuning, endpoints and batch transform on SageMaker."),
    "demo": ("imgclf.cli.demo", "A web page for a model: top-k, latency and Grad-CAM (needs imgclf[demo])."),
    "metric-definitions": (
        "imgclf.cli.metric_definitions",
        "Print the SageMaker metric_definitions JSON.",
    ),
}


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="imgclf", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"imgclf {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="Debug logging.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for name, (module_name, help_text) in COMMANDS.items():
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        cmd.set_defaults(_module=module_name)
        if name == chosen:
            # Only the chosen command's module is imported: `imgclf predict` needs neither torch's trainer
            # nor smdebug, and a missing optional extra breaks only its own command.
            importlib.import_module(module_name).add_arguments(cmd)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv).parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return importlib.import_module(args._module).run(args) or 0
    except UserError as exc:
        print(f"imgclf {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
