"""In-process fuzz of the request budget (issue 12): every hostile class of tests/hostile_payloads.py, seeded, through
`decoders.decode`: each answer is a ClientError 4xx or valid inputs, never anything else, and the memory it took
(peak RSS growth, tracemalloc peak) stays under the budget the limits promise. Prints a table by class and status
and writes it as JSON under the test's tmp dir."""

from __future__ import annotations

import json
import random
import time
from collections import Counter, defaultdict

import numpy as np
import pytest
import support.hostile_payloads as hp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from imgclf.serving import decoders
from imgclf.serving.errors import ClientError
from imgclf.serving.limits import RequestLimits

pytestmark = pytest.mark.fuzz

LIMITS = RequestLimits(resize_short_side=256)  # the defaults, with the resize step of a 224-px model
SEEDS_PER_CLASS = 3
MB = 1 << 20


def test_every_hostile_class_is_a_4xx_or_valid_within_the_memory_budget(tmp_path):
    rng = random.Random(12)
    counts: dict[str, Counter] = defaultdict(Counter)
    peak_rss: dict[str, int] = defaultdict(int)
    problems = []
    for name, generate in hp.CLASSES.items():
        for _ in range(SEEDS_PER_CLASS):
            body, ct = generate(random.Random(rng.getrandbits(32)))
            started = time.monotonic()
            result, rss, traced = hp.peak_memory(lambda body=body, ct=ct: decoders.decode(body, ct, LIMITS))
            seconds = time.monotonic() - started
            peak_rss[name] = max(peak_rss[name], rss, traced)
            if isinstance(result, ClientError) and 400 <= result.status_code < 500:
                status = result.status_code
            elif isinstance(result, list) and result and all(_valid(x) for x in result):
                status = 200
            else:
                status = f"unexpected {type(result).__name__}"
                problems.append((name, len(body), ct, repr(result)[:300]))
            counts[name][status] += 1
            if name in hp.VALID and status != 200:
                problems.append((name, len(body), ct, f"valid request refused: {result!r}"[:300]))
            if name in hp.REFUSED and status == 200:
                problems.append((name, len(body), ct, "hostile request accepted"))
            if max(rss, traced) > LIMITS.budget_bytes():
                problems.append((name, len(body), ct, f"peak {max(rss, traced) / MB:.0f} MB over the budget"))
            if seconds > 10:
                problems.append((name, len(body), ct, f"took {seconds:.1f} s"))
    table = {
        name: {"statuses": {str(k): v for k, v in sorted(c.items(), key=str)}, "peak_mb": round(peak_rss[name] / MB)}
        for name, c in counts.items()
    }
    (tmp_path / "fuzz_decode.json").write_text(json.dumps(table, indent=2))
    print("\nin-process fuzz: class, statuses, peak memory (RSS growth or tracemalloc, MB)")
    for name, row in table.items():
        print(f"  {name:28s} {row['statuses']}  {row['peak_mb']} MB")
    assert not problems, problems


def _valid(x) -> bool:
    if isinstance(x, Image.Image):
        return x.mode == "RGB" and x.width * x.height <= LIMITS.max_image_pixels
    return isinstance(x, np.ndarray) and x.dtype == np.float32 and bool(np.isfinite(x).all())


# ---- properties -----------------------------------------------------------------------------------------------

_json_text = st.text(alphabet=st.sampled_from(list('ab"\\[]{}:,\u202e\U0001f600 ')), max_size=12)
_json_docs = st.recursive(
    st.none() | st.booleans() | st.integers() | _json_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_json_text, inner, max_size=4),
    max_leaves=30,
)


def _depth(doc) -> int:
    if isinstance(doc, list):
        return 1 + max((_depth(x) for x in doc), default=0)
    if isinstance(doc, dict):
        return 1 + max((_depth(x) for x in doc.values()), default=0)
    return 0


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=_json_docs, ensure_ascii=st.booleans())
def test_json_depth_scan_agrees_with_the_parsed_depth(doc, ensure_ascii):
    text = json.dumps(doc, ensure_ascii=ensure_ascii)
    assert decoders.json_depth(text.encode()) == _depth(doc)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    body=st.binary(max_size=2048) | _json_docs.map(lambda d: json.dumps(d).encode()),
    ct=st.sampled_from(["application/json", "application/jsonlines", "application/x-npy", "image/png", None]),
)
def test_arbitrary_bodies_are_4xx_or_decoded(body, ct):
    try:
        out = decoders.decode(body, ct, LIMITS)
    except ClientError as exc:
        assert 400 <= exc.status_code < 500
    else:
        assert out and all(_valid(x) for x in out)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    shape=st.lists(st.integers(0, 2**40), min_size=0, max_size=6).map(tuple),
    descr=st.sampled_from(["|u1", "<f4", ">f8", "<f2", "<i8", "|b1", "<c8", "|O", "<U4", "|V8"]),
    data=st.binary(max_size=512),
)
def test_npy_headers_of_any_shape_and_dtype_are_4xx_or_decoded_without_allocating(shape, descr, data):
    body = hp.npy_header_only(shape, descr, data)
    try:
        out = decoders.decode(body, "application/x-npy", LIMITS)
    except ClientError as exc:
        assert 400 <= exc.status_code < 500
    else:
        assert out and all(_valid(x) for x in out)
