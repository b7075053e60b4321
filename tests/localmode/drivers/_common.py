"""Shared by the drivers: arguments in (a JSON file), one result line out, docker lookups.

Drivers run under an SDK venv's python (.venv-sdk2 / .venv-sdk3), not under pytest: they import imgclf.sagemaker
(installed editable there without torch) and the SDK, do one thing, and print `IMGCLF_RESULT {json}`.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from pathlib import Path

RESULT_MARK = "IMGCLF_RESULT "


def load_args() -> dict:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return json.loads(Path(sys.argv[1]).read_text())


def emit(result: dict) -> None:
    print(RESULT_MARK + json.dumps(result, default=str), flush=True)


def running(image: str) -> set[str]:
    out = subprocess.run(
        ["docker", "ps", "-q", "--no-trunc", "--filter", f"ancestor={image}"], capture_output=True, text=True
    )
    return set(out.stdout.split())


def wait_gone(ids: set[str], timeout: float = 60) -> float | None:
    """Seconds until none of `ids` is running, None if some still are after `timeout`."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        out = subprocess.run(["docker", "ps", "-q", "--no-trunc"], capture_output=True, text=True)
        if not ids & set(out.stdout.split()):
            return time.monotonic() - started
        time.sleep(0.2)
    return None
