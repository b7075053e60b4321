"""The model server behind `imgclf serve`: multi-model-server on the SageMaker hosting contract, healthy only when
the model can answer.

What it starts: MMS's Java front-end with our `imgclf.mms.GatedModelServer` main class (docker/mms/, built with
javac against the classes in MMS's own jar) and the `/execution-parameters` plugin. Compared with the toolkit's
`sagemaker_inference.model_server.start_model_server`, which this follows (same properties, same log config,
same SAGEMAKER_* knobs), four things are done differently, each for a known failure of the stock path:

- the HTTP port opens only after a worker has loaded the model: stock MMS binds first and answers /ping with
  200 "Healthy" while workers are still loading or crash-looping, so the first request hangs or fails;
- the properties file and MMS's temp dir (pid file, worker sockets) are private to this server, not
  /etc/sagemaker-mms.properties and /tmp: two servers on one host (tests, sidecars) do not collide, and the
  process is our child, not found by scanning every process on the host ("multiple mms model servers");
- SIGTERM stops the whole process group (front-end and every Python worker), then SIGKILL after a grace
  period: stock MMS's handler signals only the Java front-end and orphans the workers;
- the startup model gets MMS micro-batching (`IMGCLF_BATCH_SIZE`, `IMGCLF_MAX_BATCH_DELAY_MS`), which stock MMS
  cannot give a model loaded at startup.

Multi-model endpoints (SAGEMAKER_MULTI_MODEL=true): no model at startup; SageMaker loads/unloads models through
MMS's management API (same port), each with our handler; the port opens at once. POST /models takes only a
directory under the models root (the front-end's ModelUrlGuard): stock MMS would download an http(s) URL and run
the handler code it brings. Single-model endpoints do not expose the management API at all
(IMGCLF_MANAGEMENT_PORT binds it on loopback), and give up after SAGEMAKER_STARTUP_TIMEOUT when no worker loads.

Everything it is configured with arrives as one `ServerSettings` (imgclf.serving.environment); the workers get
their `HandlerSettings` through the environment built here for the child process, never through os.environ
writes. The command line is imgclf.cli.serve.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from imgclf import artifact_files
from imgclf.errors import UserError
from imgclf.serving import engines
from imgclf.serving.environment import ServerSettings

log = logging.getLogger(__name__)

HANDLER_SERVICE = "imgclf.serving.handler_service"
MODEL_NAME = "model"
STOP_GRACE_S = 5.0
MAX_MMS_PORT = 32767  # MMS's Connector.parse refuses port numbers from here up
GATED_MAIN = "imgclf.mms.GatedModelServer"
STOCK_MAIN = "com.amazonaws.ml.mms.ModelServer"
STARTUP_TIMEOUT_EXIT = 3  # GatedModelServer's exit status when no worker loaded the model in time


def check_artifact(model_dir: str) -> None:
    """Fail in a second with a clear message, not after MMS has crash-looped its workers until
    SAGEMAKER_STARTUP_TIMEOUT: the files are there, match the sha256 imgclf.json records (a changed model.pt names
    itself here) and hold valid JSON (imgclf.artifact_files: torch-free, as this process is; the workers load torch).
    """
    artifact_files.check(model_dir)


def management_address(settings: ServerSettings) -> str:
    """Multi-model: the public port (SageMaker loads models through it). Single model: loopback only, and the gated
    front-end binds it only when IMGCLF_MANAGEMENT_PORT asks (stock MMS always binds it: port + 1 then)."""
    if settings.multi_model:
        return f"http://{settings.host}:{settings.port}"
    return f"http://127.0.0.1:{settings.management_port or settings.port + 1}"


def mms_properties(settings: ServerSettings, model_store: str, plugins_dir: Path | None) -> str:
    """The MMS configuration (the keys sagemaker-inference writes, plus ours)."""
    props = {
        "enable_envvars_config": "true",
        "decode_input_request": "false",
        "inference_address": f"http://{settings.host}:{settings.port}",
        "management_address": management_address(settings),
        "default_service_handler": HANDLER_SERVICE,
        "default_workers_per_model": settings.workers,
        "default_response_timeout": max(1, -(-settings.timeout_s // 60)),  # MMS reads this one in minutes
        "default_response_timeout_seconds": settings.timeout_s,
        "max_request_size": settings.max_payload_mb * 1024 * 1024,
        "max_response_size": max(settings.max_payload_mb, 6) * 1024 * 1024,
        "model_store": model_store,
        "number_of_gpu": settings.gpus,
        "async_logging": "true",
        "vmargs": settings.vmargs,
    }
    if plugins_dir is not None:
        props["plugins_path"] = str(plugins_dir)
    return "".join(f"{k}={v}\n" for k, v in props.items())


def build_command(settings: ServerSettings, workdir: Path) -> tuple[list[str], dict[str, str]]:
    """The front-end's command line and environment: the inherited one plus the workers' settings and a private
    temp dir (built here, not written into this process's os.environ)."""
    import mms
    import sagemaker_inference

    mms_home = Path(mms.__file__).resolve().parent.parent
    log_config = Path(sagemaker_inference.__file__).resolve().parent / "etc" / "log4j2.xml"
    model_dir, jar = settings.model_dir, settings.mms_jar
    plugins_dir = None
    if jar is not None:
        plugins_dir = workdir / "plugins"
        plugins_dir.mkdir(exist_ok=True)
        shutil.copy(jar, plugins_dir / jar.name)
    # MME: SageMaker loads models by absolute path (/opt/ml/models/<name>/model), so the store is "/" as in the
    # toolkit's mme-mms.properties; single model: the artifact's parent, the model registered by its name.
    model_store = "/" if settings.multi_model else str(Path(model_dir).parent)
    config = workdir / "mms.properties"
    config.write_text(mms_properties(settings, model_store, plugins_dir))
    cmd = [
        settings.java,
        f"-Dmodel_server_home={mms_home}",
        f"-Dlog4j.configurationFile=file://{log_config}",
        f"-Djava.io.tmpdir={workdir}",
        *settings.vmargs.split(),
        f"-Dimgclf.workers={settings.workers}",
        f"-Dimgclf.batch_size={settings.batch_size}",
        f"-Dimgclf.max_batch_delay_ms={settings.max_batch_delay_ms}",
        f"-Dimgclf.handler={HANDLER_SERVICE}",
        # No worker READY by then: the front-end exits 3 (SageMaker then reports a failed endpoint).
        f"-Dimgclf.startup_timeout_s={settings.startup_timeout_s}",
        f"-Dimgclf.management={'true' if settings.multi_model or settings.management_port else 'false'}",
    ]
    if settings.multi_model:
        # POST /models may register only a directory under the store: no URL downloads, no .. or symlinks out.
        cmd.append(f"-Dimgclf.models_root={model_dir}")
    classpath = f"{mms_home}/mms/frontend/*"
    args = ["--python", sys.executable, "-f", str(config), "-s", model_store]
    if jar is not None:
        classpath += f":{plugins_dir}/*"
        if not settings.multi_model:
            cmd.append(f"-Dimgclf.model={MODEL_NAME}={Path(model_dir).name}")  # relative to the store
        main = GATED_MAIN
    else:
        log.warning(
            "imgclf-mms.jar not found (IMGCLF_MMS_JAR, the package's, the image's): starting stock MMS, whose /ping "
            "answers 200 before the model is loaded and which has no /execution-parameters."
        )
        main = STOCK_MAIN
        if not settings.multi_model:
            args += ["-m", f"{MODEL_NAME}={model_dir}"]
    cmd += ["-cp", classpath, main, *args]
    # The workers' EMF request metrics go to this process's stdout (unless IMGCLF_REQUEST_METRICS_TO says
    # otherwise): bare JSON lines in the container's log, which CloudWatch turns into metrics.
    worker_env = settings.worker_env(server_pid=os.getpid())
    env = {**os.environ, **worker_env, "TEMP": str(workdir), "TMPDIR": str(workdir)}
    return cmd, env


class Server:
    """The MMS process group: start, wait, stop (front-end and every worker)."""

    def __init__(self, cmd: list[str], env: dict[str, str]):
        self.cmd, self.env = cmd, env
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        log.info("Starting MMS: %s", " ".join(self.cmd))
        self.proc = subprocess.Popen(self.cmd, env=self.env, start_new_session=True)

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        if self.proc is None:
            return
        pgid = self.proc.pid  # start_new_session: the front-end leads its own group; workers inherit it
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + grace_s
            while time.monotonic() < deadline and _group_alive(pgid):
                _reap()
                time.sleep(0.05)
            if not _group_alive(pgid):
                break
            log.warning("MMS did not stop within %.0f s of SIGTERM; sending SIGKILL", grace_s)
        _reap()


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of a process group."""
    import psutil

    members = []
    for proc in psutil.process_iter(["status"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                members.append(proc.pid)
        except (ProcessLookupError, psutil.Error):
            continue
    return members


def _group_alive(pgid: int) -> bool:
    return bool(group_members(pgid))


def _reap() -> None:
    """Collect exited children (we may be PID 1 in the container)."""
    try:
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass
    except ChildProcessError:
        pass


def serve(settings: ServerSettings) -> int:
    """Check the model directory, start MMS, wait until it exits or a signal stops it; the exit status."""
    model_dir = settings.model_dir
    if not settings.multi_model:
        check_artifact(model_dir)
        engines.check_servable(model_dir, settings.handler.engine)  # the torch-free image needs an exported engine
    elif not os.path.isdir(model_dir):
        raise UserError(f"Multi-model store {model_dir} is not a directory.")
    if not 0 < settings.port < MAX_MMS_PORT:
        raise UserError(f"Port {settings.port}: multi-model-server accepts ports 1..{MAX_MMS_PORT - 1}.")
    log.info(
        "Serving %s on %s:%d with %d worker(s)%s, batch %d",
        model_dir,
        settings.host,
        settings.port,
        settings.workers,
        " (SAGEMAKER_MODEL_SERVER_WORKERS)" if settings.workers_from_env else "",
        settings.batch_size,
    )
    workdir = Path(tempfile.mkdtemp(prefix="imgclf-mms-"))
    cmd, env = build_command(settings, workdir)
    server = Server(cmd, env)
    stopping = []

    stopping_at = []

    def _on_signal(signo, _frame):
        stopping.append(signo)
        stopping_at.append(time.monotonic())

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _on_signal)
    server.start()
    try:
        while not stopping and server.proc.poll() is None:
            _reap()
            time.sleep(0.1)
    finally:
        rc = server.proc.poll()
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    if stopping:
        log.info("Stopped on signal %d in %.2f s", stopping[0], time.monotonic() - stopping_at[0])
        return 0
    if rc == STARTUP_TIMEOUT_EXIT:
        log.error(
            "No worker loaded the model within SAGEMAKER_STARTUP_TIMEOUT=%d s (see the worker log above)",
            settings.startup_timeout_s,
        )
    else:
        log.error("The model server exited with status %s", rc)
    return 1 if not rc else rc
