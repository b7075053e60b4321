"""Probabilities + Accept -> response body.

Accept types (first supported one in the Accept header wins; none or */* -> SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT):

    application/json (default)
        top-k:          {"predictions": [[{"label": "3", "index": 3, "probability": 0.97}, ...], ...]}
                        one list per input image, in request order, highest probability first
        probabilities:  [[p_0, ..., p_{C-1}], ...]  one row per image (what the seed clients' JSONDeserializer
                        and np.argmax(response, 1) expect)
    application/jsonlines   one line per image: the top-k list, or the probability row
    application/x-npy       float32 array (N, C) of probabilities

Options, as Accept parameters (`application/json; top_k=3`, `application/json; output=probabilities`) or in
SageMaker's CustomAttributes header (`X-Amzn-SageMaker-Custom-Attributes: top_k=3,output=probabilities`):
`top_k` (1..C, default IMGCLF_TOP_K = 5) and `output` (`top_k` or `probabilities`).
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass

import numpy as np

from imgclf.serving import errors

JSON = "application/json"
JSONLINES = "application/jsonlines"
NPY = "application/x-npy"
SUPPORTED = [JSON, JSONLINES, "application/x-jsonlines", NPY]
OUTPUTS = ("top_k", "probabilities")


@dataclass(frozen=True)
class ResponseFormat:
    content_type: str
    output: str  # "top_k" | "probabilities"
    top_k: int


def _params(text: str) -> dict[str, str]:
    out = {}
    for part in text.replace(";", ",").split(","):
        if "=" in part:
            key, _, value = part.partition("=")
            out[key.strip().lower()] = value.strip().strip('"')
    return out


def negotiate(accept: str | None, custom_attributes: str | None, default_accept: str, default_k: int) -> ResponseFormat:
    """Pick the response format; 406 when no Accept entry is one we produce, 400 for bad options."""
    chosen, params = None, {}
    entries = [e.strip() for e in (accept or "").split(",") if e.strip()]
    for entry in entries or ["*/*"]:
        media, _, rest = entry.partition(";")
        media = media.strip().lower()
        if media in ("*/*", "application/*"):
            media = default_accept.split(";", 1)[0].strip().lower()
            rest = rest or default_accept.partition(";")[2]
        if media == "application/x-jsonlines":
            media = JSONLINES
        if media in SUPPORTED:
            chosen, params = media, _params(rest)
            break
    if chosen is None:
        raise errors.not_acceptable(accept or default_accept, SUPPORTED)
    params = {**_params(custom_attributes or ""), **params}
    output = params.get("output", "top_k").lower()
    if output not in OUTPUTS:
        raise errors.bad_request(f"output={output!r}: choose one of {', '.join(OUTPUTS)}.")
    raw_k = params.get("top_k", params.get("k", str(default_k)))
    try:
        k = int(raw_k)
    except ValueError:
        raise errors.bad_request(f"top_k={raw_k!r} is not an integer.") from None
    if k < 1:
        raise errors.bad_request(f"top_k={k} must be at least 1.")
    return ResponseFormat(content_type=chosen, output=output, top_k=k)


def top_k(probs: np.ndarray, index_to_name: dict[int, str], k: int) -> list[list[dict]]:
    k = min(k, probs.shape[1])
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return [
        [{"label": index_to_name.get(int(i), str(int(i))), "index": int(i), "probability": float(row[i])} for i in idx]
        for row, idx in zip(probs, order, strict=True)
    ]


def encode(probs: np.ndarray, fmt: ResponseFormat, index_to_name: dict[int, str]) -> bytes:
    """(N, C) probabilities -> body in `fmt.content_type`."""
    probs = np.asarray(probs, dtype=np.float32)
    if fmt.content_type == NPY:
        buf = io.BytesIO()
        np.save(buf, probs, allow_pickle=False)
        return buf.getvalue()
    if fmt.output == "probabilities":
        rows = [[float(p) for p in row] for row in probs]
    else:
        rows = top_k(probs, index_to_name, fmt.top_k)
    if fmt.content_type == JSONLINES:
        return "".join(json.dumps(r) + "\n" for r in rows).encode()
    if fmt.output == "probabilities":
        return json.dumps(rows).encode()
    return json.dumps({"predictions": rows}).encode()
