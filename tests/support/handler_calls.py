"""Helpers for the serving unit tests: MMS's real Context objects, image bytes, calling the handler."""

from __future__ import annotations

import io

import numpy as np
from mms.context import Context, RequestProcessor
from PIL import Image

CLASSES = [f"class-{i}" for i in range(10)]


def mms_context(model_dir, headers: list[dict[str, str]]) -> Context:
    """The Context MMS hands a worker for one batch: one RequestProcessor (headers, status) per request."""
    ctx = Context("model", str(model_dir), None, len(headers), None, "1.1.11")
    ctx.request_processor = [RequestProcessor(h) for h in headers]
    return ctx


def image_bytes(fmt: str = "PNG", size=(40, 30), mode: str = "RGB", **save) -> bytes:
    rng = np.random.default_rng(0)
    if mode in ("I;16", "I"):
        img = Image.fromarray(rng.integers(0, 65535, size[::-1], dtype=np.uint16))
    else:
        img = Image.fromarray(rng.integers(0, 255, (*size[::-1], 3), dtype=np.uint8), "RGB").convert(mode)
    buf = io.BytesIO()
    img.save(buf, fmt, **save)
    return buf.getvalue()


def call(handler, requests: list[tuple[bytes | str, dict[str, str]]], model_dir=None):
    """Run handler.handle on one MMS batch; [(status, content type, body)] per request."""
    ctx = mms_context(model_dir or "unused", [headers for _, headers in requests])
    bodies = handler.handle([{"body": body} for body, _ in requests], ctx)
    out = []
    for idx, body in enumerate(bodies):
        proc = ctx.request_processor[idx]
        out.append((proc.get_response_status_code(), proc.get_response_header("content-type"), body))
    return out


def call_one(handler, body, content_type="image/png", accept=None, **headers):
    h = {"Content-Type": content_type} if content_type else {}
    if accept:
        h["Accept"] = accept
    h.update({k.replace("_", "-"): v for k, v in headers.items()})
    return call(handler, [(body, h)])[0]
