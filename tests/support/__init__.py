"""Helpers the test tiers share, one module per concern (pyproject puts tests/ on pytest's pythonpath).

- `REPO`, `VENV_BIN` (here): the checkout and the bin/ of the Python running the tests (its console scripts).
- `ports`: `free_port()`, the one copy (also the benchmarks' load generator's).
- `training`: fast hyperparameters, a fake /opt/ml, sagemaker-training's real `train` on it.
- `handler_calls`: MMS's real Context objects and image bytes, to call the serving handler in-process.
- `corner_digits`: a digit pasted into a corner of a blank canvas, a CNN trained on it in seconds, Grad-CAM hits.
- `served`: `imgclf serve` as a managed process, HTTP without exceptions.
- `stub_endpoint`: a loopback stand-in endpoint with canned answers, for the client-side tests.
- `containers`: the images run the way SageMaker runs them (build, train on a fake /opt/ml, serve).
- `localmode`: SageMaker SDK local mode against the images (fixtures registered by tests/localmode/conftest.py).
- `reliability`: fault-test helpers (tiny samples, a tmpfs, the benchmarks' load generator).
- `hostile_payloads`: the attack payloads of the fuzz tier and the decoder tests.
- `emf`: the CloudWatch Embedded Metric Format rules, and the EMF lines of a log.
- `moto`: moto in server mode (the AWS API for the push and endpoint tests), its env for boto3/awscli.
- `sdk`: whether the SageMaker SDK is installed here.
- `imports`: the package's third-party imports (AST) and the extra of pyproject.toml each one belongs to.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
