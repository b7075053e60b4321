"""The `imgclf demo` web page (Gradio): pick or drop an image, see the top-k classes, the latency and the Grad-CAM
overlay beside the image.

Three back-ends answer the page, all through the serving contract's own pieces:

    LocalBackend(model_dir)       in-process: the serving decoders, the artifact loader, the same Explainer the
                                  server uses (serving/explanations.py)
    RemoteBackend(url=...)        a running `imgclf serve` (POST /invocations)    } both through imgclf.client's
    RemoteBackend(endpoint=...)   a SageMaker endpoint (invoke_endpoint)          } Endpoint, as `imgclf predict`

Remote explanations are asked for the way any client asks: `X-Amzn-SageMaker-Custom-Attributes: explain=gradcam`.
A file that is not an image (or that the server refuses) becomes a one-line message on the page, never a trace.
Nothing reaches the network but the chosen back-end: Gradio's analytics and version check are off, the page's
fonts are Gradio's bundled ones, and nothing is downloaded at run time.
"""

from __future__ import annotations

import base64
import io
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from imgclf.errors import UserError

log = logging.getLogger(__name__)

MAX_EXAMPLES = 12
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


@dataclass
class Result:
    predictions: list[dict]  # top-k: [{"label", "index", "probability"}], highest first
    overlay: Image.Image | None  # the top-1 class's Grad-CAM overlay
    latency_ms: float
    explain_ms: float | None = None  # in-process only: the part of latency_ms spent on the explanation


def _content_type(path: str) -> str:
    from imgclf.client import content_type_for

    return content_type_for(path)


def _overlay(answer: dict) -> Image.Image | None:
    try:
        first = answer["explanations"][0][0]
    except (KeyError, IndexError, TypeError):
        return None
    return Image.open(io.BytesIO(base64.b64decode(first["overlay_png"]))).convert("RGB")


class LocalBackend:
    """A model directory, loaded once, answered in this process exactly as the server would."""

    def __init__(self, model_dir: str | Path) -> None:
        import torch

        from imgclf.artifact import load_artifact
        from imgclf.images import eval_transform
        from imgclf.serving import explanations

        artifact = load_artifact(model_dir, "cpu")
        self.model, self.meta, self.index_to_name = artifact.model, artifact.meta, artifact.index_to_name
        self.transform = eval_transform(self.meta)
        self.explainer = explanations.Explainer(
            self.model, self.meta.arch, self.meta.input_shape, self.meta.mean, self.meta.std
        )
        self.description = f"{model_dir} ({self.meta.arch}, {self.meta.num_classes} classes, in-process)"
        self._torch = torch

    def classify(self, body: bytes, content_type: str, top_k: int, explain: bool) -> Result:
        from imgclf.serving import decoders, encoders, explanations
        from imgclf.serving.limits import RequestLimits

        torch = self._torch
        started = time.perf_counter()
        # The serving defaults (the request budget), resized as this model resizes.
        image = decoders.decode_image(body, RequestLimits(resize_short_side=self.meta.resize_size))
        batch = self.transform(image)[None]
        with torch.inference_mode():
            probs = torch.softmax(self.model(batch).float(), dim=1).numpy()
        predictions = encoders.top_k(probs, self.index_to_name, top_k)[0]
        predicted = time.perf_counter()
        overlay, explain_ms = None, None
        if explain:
            found = self.explainer.explain(batch, probs, explanations.ExplainRequest("gradcam", None), {})
            overlay = _overlay({"explanations": found})
            explain_ms = (time.perf_counter() - predicted) * 1000
        return Result(predictions, overlay, (time.perf_counter() - started) * 1000, explain_ms)


class RemoteBackend:
    """A running server (`url`) or a SageMaker endpoint (`endpoint`), asked through imgclf.client."""

    def __init__(self, url: str | None = None, endpoint: str | None = None, region: str | None = None) -> None:
        from imgclf.client import Endpoint

        self._endpoint = Endpoint(url=url, name=None if url else endpoint, region=region)
        self.description = self._endpoint.description

    def classify(self, body: bytes, content_type: str, top_k: int, explain: bool) -> Result:
        from imgclf.client import custom_attributes

        started = time.perf_counter()
        answer = self._endpoint.invoke(
            body, content_type, custom_attributes(top_k, "explain=gradcam" if explain else None)
        )
        latency = (time.perf_counter() - started) * 1000
        try:
            (predictions,) = answer["predictions"]
        except (ValueError, TypeError):
            raise UserError(f"Unexpected answer (not imgclf's JSON schema): {str(answer)[:200]}") from None
        return Result(predictions, _overlay(answer), latency)


def describe_error(exc: BaseException) -> str:
    """The one line a person sees for a refused file; only bugs keep their traceback (in the log, not the page)."""
    message = getattr(exc, "message", None)
    if isinstance(message, str) and message:
        return message.strip()  # the serving ClientError: the server's own 4xx message
    if isinstance(exc, UserError):
        return str(exc)
    log.exception("demo: classification failed")
    return f"Internal error ({type(exc).__name__}); see the demo's log."


def sample_examples(out_dir: Path) -> list[str]:
    """One test image per class of the embedded digits sample (what the quick-start model was trained on), named
    for its digit."""
    from imgclf.sample_data import write_sample_data

    write_sample_data(out_dir / "sample")
    examples = []
    for folder in sorted((out_dir / "sample" / "test").iterdir(), key=lambda p: int(p.name)):
        target = out_dir / f"digit-{folder.name}.png"
        target.write_bytes(sorted(folder.iterdir())[0].read_bytes())
        examples.append(str(target))
    return examples


def folder_examples(folder: Path) -> list[str]:
    found = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not found:
        raise UserError(f"--examples {folder}: no images ({', '.join(IMAGE_SUFFIXES)}) in it.")
    return [str(p) for p in found[:MAX_EXAMPLES]]


def for_display(image: Image.Image, min_side: int = 224) -> Image.Image:
    """Small images (the 8x8 sample digits) upscaled with square pixels, so the page shows them at the overlay's
    size instead of as a speck."""
    scale = -(-min_side // max(1, min(image.size)))
    if scale <= 1:
        return image
    return image.resize((image.width * scale, image.height * scale), Image.NEAREST)


def build_app(backend: Any, examples: list[str], top_k: int = 5):
    """The Gradio Blocks page for `backend` (anything with `.classify(...)` and `.description`)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # read by gradio at import time
    import gradio as gr

    def classify(path: str | None, explain: bool):
        if not path:
            return None, None, None, ""
        name = Path(path).name
        body = Path(path).read_bytes()
        try:
            shown = for_display(Image.open(io.BytesIO(body)).convert("RGB"))
        except Exception:  # noqa: BLE001 - the backend says why, in words
            shown = None
        try:
            result = backend.classify(body, _content_type(path), top_k, explain)
        except Exception as exc:  # noqa: BLE001 - a refused file is a message on the page
            return shown, None, None, f"**Could not classify {name}:** {describe_error(exc)}"
        best = result.predictions[0]
        timing = f"{result.latency_ms:.0f} ms"
        if result.explain_ms is not None:
            timing += f" (of which Grad-CAM {result.explain_ms:.0f} ms)"
        status = f"Predicted **{best['label']}** ({best['probability']:.1%}) for {name} in {timing}."
        scores = {p["label"]: p["probability"] for p in result.predictions}
        return shown, result.overlay, scores, status

    with gr.Blocks(title="imgclf demo", analytics_enabled=False) as app:
        gr.Markdown(f"## imgclf demo\n{backend.description}")
        with gr.Row():
            with gr.Column(scale=1):
                upload = gr.File(label="Image file", type="filepath", elem_id="upload")
                explain = gr.Checkbox(value=True, label="Explain (Grad-CAM for the top class)", elem_id="explain")
                if examples:
                    gr.Examples(examples=[[e] for e in examples], inputs=[upload], label="Sample test images")
            with gr.Column(scale=2):
                with gr.Row():
                    shown = gr.Image(label="Image", type="pil", interactive=False, elem_id="image", height=260)
                    overlay = gr.Image(
                        label="Grad-CAM overlay", type="pil", interactive=False, elem_id="overlay", height=260
                    )
                status = gr.Markdown(elem_id="status")
                scores = gr.Label(num_top_classes=top_k, label=f"Top-{top_k}", elem_id="topk")
        upload.change(classify, inputs=[upload, explain], outputs=[shown, overlay, scores, status])
    return app


def launch(app, host: str, port: int, allowed: list[str]) -> None:
    app.launch(
        server_name=host,
        server_port=port,
        share=False,
        inbrowser=False,
        ssr_mode=False,  # server-side rendering would need Node
        mcp_server=False,
        enable_monitoring=False,
        footer_links=[],
        allowed_paths=allowed,
        show_error=False,
    )


def examples_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="imgclf-demo-"))
