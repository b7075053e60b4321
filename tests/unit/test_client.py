"""imgclf.client against a stand-in server: custom attributes go out after top_k, answers come back whole."""

from __future__ import annotations

import http.server
import json
import threading

import pytest

from imgclf import client
from imgclf.errors import UserError

pytestmark = pytest.mark.unit


class _Server(http.server.BaseHTTPRequestHandler):
    answers: list[tuple[int, bytes]] = []
    seen: list[dict[str, str | None]] = []

    def do_POST(self):  # noqa: N802
        self.rfile.read(int(self.headers["Content-Length"]))
        type(self).seen.append(
            {k: self.headers.get(k) for k in ("Content-Type", "Accept", "X-Amzn-SageMaker-Custom-Attributes")}
        )
        status, body = type(self).answers.pop(0)
        self.send_response(status)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = http.server.HTTPServer(("127.0.0.1", 0), _Server)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    _Server.answers, _Server.seen = [], []
    yield f"http://127.0.0.1:{httpd.server_port}", _Server
    httpd.shutdown()


ANSWER = {
    "predictions": [[{"label": "3", "index": 3, "probability": 0.9}]],
    "explanations": [[{"method": "gradcam", "index": 3, "heatmap": [[1.0]], "overlay_png": "iVBOR"}]],
}


def test_classify_sends_the_attributes_after_top_k_and_keeps_the_explanations(server, tmp_path):
    url, handler = server
    image = tmp_path / "three.png"
    image.write_bytes(b"\x89PNG not really")
    handler.answers = [(200, json.dumps(ANSWER).encode()), (200, json.dumps(ANSWER).encode())]
    (result,) = client.classify([str(image)], 2, endpoint_url=url, attributes="explain=gradcam;class=3")
    assert result == {
        "image": str(image),
        "predictions": ANSWER["predictions"][0],
        "explanations": ANSWER["explanations"][0],
    }
    client.classify([str(image)], 5, endpoint_url=url)
    assert handler.seen == [
        {"Content-Type": "image/png", "Accept": "application/json",
         "X-Amzn-SageMaker-Custom-Attributes": "top_k=2,explain=gradcam;class=3"},
        {"Content-Type": "image/png", "Accept": "application/json", "X-Amzn-SageMaker-Custom-Attributes": "top_k=5"},
    ]  # fmt: skip


def test_the_endpoint_returns_the_whole_answer_and_names_a_refusal(server):
    url, handler = server
    handler.answers = [(200, json.dumps(ANSWER).encode()), (400, b"explain=gradcam is limited to 4 images\n")]
    endpoint = client.Endpoint(url=url)
    assert endpoint.invoke(b"x", "image/png", "explain=gradcam") == ANSWER
    with pytest.raises(UserError, match=r"answered 400 Bad Request: explain=gradcam is limited to 4 images$"):
        endpoint.invoke(b"x", "image/png")
    assert handler.seen[1]["X-Amzn-SageMaker-Custom-Attributes"] is None


def test_an_answer_outside_the_schema_is_a_user_error(server):
    url, handler = server
    handler.answers = [(200, b"<html>proxy</html>")]
    with pytest.raises(UserError, match="not imgclf's JSON schema"):
        client.Endpoint(url=url).invoke(b"x", "image/png")
