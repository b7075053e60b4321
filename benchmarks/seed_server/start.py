"""Start the seed-style server: the seeds' inference.py on sagemaker-inference's default handler service, MMS.

What the AWS PyTorch inference container does for `serve`, minus the container: the toolkit's own MMS
configuration (`_generate_mms_config_properties`, the same SAGEMAKER_* knobs), its DefaultHandlerService and
Transformer, the user module found as `inference` under model_dir/code. Differences kept small and local: the
config file goes to a temp dir instead of /etc/sagemaker-mms.properties and MMS runs in the foreground, so the
caller owns the process group (kill the group: killing only the front-end orphans the Python workers).

    python benchmarks/seed_server/start.py --artifact MODEL_DIR --port 8081 [--workers 2]

MODEL_DIR is an imgclf artifact; its weights are converted to the seeds' model.pth layout (fc -> fc.0).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def seed_model_dir(artifact: Path, out: Path) -> int:
    """out/model.pth (seed layout) + out/code/inference.py; returns the class count."""
    import torch

    state = torch.load(artifact / "model.pt", map_location="cpu", weights_only=True)
    state = {("fc.0." + k[3:] if k.startswith("fc.") else k): v for k, v in state.items()}
    out.mkdir(parents=True, exist_ok=True)
    torch.save(state, out / "model.pth")
    (out / "code").mkdir(exist_ok=True)
    shutil.copy(HERE / "inference.py", out / "code" / "inference.py")
    return len(json.loads((artifact / "index_to_name.json").read_text()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artifact", type=Path, required=True)
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--workers", type=int, default=None, help="default: the toolkit's (CPU count)")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="seed-server-"))
    model_dir = work / "model"
    num_classes = seed_model_dir(args.artifact, model_dir)
    os.environ["SAGEMAKER_BIND_TO_PORT"] = str(args.port)
    if args.workers:
        os.environ["SAGEMAKER_MODEL_SERVER_WORKERS"] = str(args.workers)
    os.environ["SEED_NUM_CLASSES"] = str(num_classes)
    os.environ["PYTHONPATH"] = f"{model_dir / 'code'}:{os.environ.get('PYTHONPATH', '')}"

    from sagemaker_inference import default_handler_service, environment, model_server

    config = work / "mms.properties"
    properties = model_server._generate_mms_config_properties(
        environment.Environment(), default_handler_service.__name__
    )
    config.write_text(properties.replace("http://0.0.0.0:", "http://127.0.0.1:"))  # loopback only here
    mms = shutil.which("multi-model-server") or str(Path(sys.executable).parent / "multi-model-server")
    cmd = [
        mms,
        "--start",
        "--foreground",
        "--model-store",
        model_server.MODEL_STORE,  # "/", as the toolkit: the model path is absolute
        "--mms-config",
        str(config),
        "--log-config",
        model_server.DEFAULT_MMS_LOG_FILE,
        "--models",
        f"model={model_dir}",
    ]
    print(" ".join(cmd), flush=True)
    os.chdir(work)
    os.execv(cmd[0], cmd)  # same pid, same process group: the caller's kill reaches java and its workers


if __name__ == "__main__":
    sys.exit(main())
