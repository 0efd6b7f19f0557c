"""The Open Inference Protocol routes (fakenews_pl/serving/v2.py), through `tritonclient.http`:
a client written by others, against a real server on a free port of 127.0.0.1."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from servers import free_port

from fakenews_pl import Classifier
from fakenews_pl.serving.server import create_app

httpclient = pytest.importorskip("tritonclient.http", reason="tritonclient[http] is not installed")
uvicorn = pytest.importorskip("uvicorn")


@pytest.fixture(scope="module")
def served(trained_run: dict) -> Iterator[dict]:
    """The session's tiny run served in this process (a uvicorn thread)."""
    classifier = Classifier.load(trained_run["ckpt"])
    app = create_app(classifier, model_name="fakenews", access_log=False)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started
    texts = trained_run["datamodule"].texts("test")[:7].tolist()
    yield {"url": f"127.0.0.1:{port}", "classifier": classifier, "texts": texts}
    server.should_exit = True
    thread.join(timeout=10)


def _infer(client, texts: list[str], outputs=("probabilities", "label")):
    tensor = httpclient.InferInput("text", [len(texts)], "BYTES")
    tensor.set_data_from_numpy(np.array(texts, dtype=object), binary_data=False)
    wanted = [httpclient.InferRequestedOutput(name, binary_data=False) for name in outputs]
    return client.infer("fakenews", [tensor], outputs=wanted, request_id="r-1")


def test_tritonclient_infers_what_predict_answers_bit_for_bit(served: dict) -> None:
    client = httpclient.InferenceServerClient(served["url"])
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("fakenews")
    meta = client.get_model_metadata("fakenews")
    assert [(t["name"], t["datatype"], t["shape"]) for t in meta["inputs"]] == [
        ("text", "BYTES", [-1])
    ]
    assert [(t["name"], t["datatype"], t["shape"]) for t in meta["outputs"]] == [
        ("probabilities", "FP32", [-1, 2]), ("label", "BYTES", [-1]),
    ]  # fmt: skip
    result = _infer(client, served["texts"])
    probabilities = result.as_numpy("probabilities")
    assert probabilities.dtype == np.float32 and probabilities.shape == (7, 2)
    predicted = httpx.post(f"http://{served['url']}/predict", json={"texts": served["texts"]})
    expected = np.array(
        [
            [p["probabilities"][c] for c in ("Fake", "True")]
            for p in predicted.json()["predictions"]
        ],
        dtype=np.float32,
    )
    assert np.array_equal(probabilities, expected)  # the same float32 values
    labels = [str(label) for label in result.as_numpy("label")]  # JSON strings
    assert labels == served["classifier"].predict(served["texts"])
    assert result.get_response()["id"] == "r-1"
    only = _infer(client, served["texts"][:2], outputs=("label",))
    assert only.as_numpy("probabilities") is None and len(only.as_numpy("label")) == 2


ONE = {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["a"]}]}


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"inputs": []}, 400, "inputs: expected one tensor named 'text'"),
        ({"inputs": [{"name": "txt", "shape": [1], "datatype": "BYTES", "data": ["a"]}]}, 400,
         "inputs[0].name: expected 'text', got 'txt'"),
        ({"inputs": [{"name": "text", "shape": [1], "datatype": "FP32", "data": [1.0]}]}, 400,
         "inputs[0].datatype: expected BYTES, got 'FP32'"),
        ({"inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "data": ["a"]}]}, 400,
         "inputs[0].shape: [2], expected [1] for its data"),
        ({"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [3]}]}, 400,
         "inputs[0].data: expected a list of strings"),
        ({"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["a"]}],
          "outputs": [{"name": "logits"}]}, 400, "outputs: 'logits' is not an output"),
        ({**ONE, "outputs": 5}, 400, "outputs: expected a list of objects"),
        ({**ONE, "outputs": "label"}, 400, "outputs: expected a list of objects"),
        ({**ONE, "outputs": [{"name": "label"}, {"name": "label"}]}, 400,
         "outputs: 'label' is asked for twice"),
        ({**ONE, "outputs": [{"name": "label", "parameters": "x"}]}, 400,
         "outputs[0].parameters: expected an object"),
        ({**ONE, "parameters": [1]}, 400, "parameters: expected an object"),
        ({"inputs": [{**ONE["inputs"][0], "parameters": "x"}]}, 400,
         "inputs[0].parameters: expected an object"),
        ({"inputs": [{**ONE["inputs"][0], "data": ["\ud800"]}]}, 400,
         "inputs[0].data[0]: not valid Unicode (a lone surrogate"),
        ({"inputs": [{**ONE["inputs"][0], "shape": [True]}]}, 400,
         "inputs[0].shape: [True], expected [N] for N texts"),
        # Refused by its shape alone: no list of 10**30 texts is made first.
        ({"inputs": [{"name": "text", "shape": [10**30], "datatype": "BYTES",
                      "parameters": {"binary_data_size": 0}}]}, 413,
         f"inputs[0]: {10**30:,} texts, at most 256 per request"),
    ],
)  # fmt: skip
def test_bad_tensors_get_the_protocols_error_object(
    served: dict, body: dict, status: int, message: str
) -> None:
    answer = httpx.post(  # json.dumps escapes a lone surrogate (httpx's json= cannot send it)
        f"http://{served['url']}/v2/models/fakenews/infer",
        content=json.dumps(body), headers={"content-type": "application/json"},
    )  # fmt: skip
    assert answer.status_code == status
    assert answer.json()["error"].startswith(message)
    client = httpclient.InferenceServerClient(served["url"])
    with pytest.raises(Exception, match="not served here; this server serves 'fakenews'"):
        client.get_model_metadata("other")


@pytest.mark.parametrize(("binary_in", "binary_out"), [(True, True), (True, False), (False, True)])
def test_binary_tensors_infer_what_json_tensors_do_bit_for_bit(
    served: dict, binary_in: bool, binary_out: bool
) -> None:
    """tritonclient's default (binary input and outputs) and each half of it, against the
    JSON tensors' answer: the same float32 bits, the same labels."""
    client = httpclient.InferenceServerClient(served["url"])
    texts = [*served["texts"], "", "ünïcode ✓ text"]
    tensor = httpclient.InferInput("text", [len(texts)], "BYTES")
    tensor.set_data_from_numpy(np.array(texts, dtype=object), binary_data=binary_in)
    wanted = [
        httpclient.InferRequestedOutput(name, binary_data=binary_out)
        for name in ("probabilities", "label")
    ]
    result = client.infer("fakenews", [tensor], outputs=wanted)
    reference = _infer(client, texts)
    assert result.as_numpy("probabilities").dtype == np.float32
    assert np.array_equal(
        result.as_numpy("probabilities").view(np.uint32),
        reference.as_numpy("probabilities").view(np.uint32),
    )
    labels = [x.decode() if isinstance(x, bytes) else str(x) for x in result.as_numpy("label")]
    assert labels == served["classifier"].predict(texts)
    outputs = result.get_response()["outputs"]
    assert all(("data" in o) != binary_out for o in outputs)
    assert client.get_server_metadata()["extensions"] == ["binary_tensor_data"]


def _binary_body(texts: list[bytes], declared: int | None = None, extra: bytes = b"") -> tuple:
    blob = b"".join(len(t).to_bytes(4, "little") + t for t in texts) + extra
    head = json.dumps({"inputs": [{
        "name": "text", "datatype": "BYTES", "shape": [len(texts)],
        "parameters": {"binary_data_size": len(blob) if declared is None else declared},
    }]}).encode()  # fmt: skip
    return head + blob, {"Inference-Header-Content-Length": str(len(head))}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (_binary_body([b"ok", b"\xff\xfe"]), "inputs[0].data[1]: not UTF-8 at byte 0"),
        (
            _binary_body([b"ok"], extra=b"xx"),
            "inputs[0]: 2 bytes of binary data after its 1 elements",
        ),
        (
            _binary_body([b"ok"], declared=3),
            "inputs[0].parameters.binary_data_size: 3, but 6 bytes follow the JSON part",
        ),
        (
            (b'{"inputs": []}', {"Inference-Header-Content-Length": "999"}),
            "Inference-Header-Content-Length: '999', expected the length of the JSON part, "
            "at most the body's 14 bytes",
        ),
        (
            (b'{"inputs": []}', {"Inference-Header-Content-Length": "9" * 5000}),
            f"Inference-Header-Content-Length: '{'9' * 40}', expected the length of the JSON "
            "part, at most the body's 14 bytes",
        ),
        ((b"[" * 100_000, {}), "body: malformed JSON: nested too deeply"),
    ],
)  # fmt: skip
def test_bad_binary_tensors_get_one_line_naming_the_element(
    served: dict, body: tuple, message: str
) -> None:
    content, headers = body
    answer = httpx.post(
        f"http://{served['url']}/v2/models/fakenews/infer", content=content, headers=headers
    )
    assert (answer.status_code, answer.json()) == (400, {"error": message})


def test_a_lying_element_length_is_refused(served: dict) -> None:
    content, headers = _binary_body([b"ok"])
    content = content[: -len(b"ok") - 4] + (99).to_bytes(4, "little") + b"ok"
    answer = httpx.post(
        f"http://{served['url']}/v2/models/fakenews/infer", content=content, headers=headers
    )
    assert answer.json() == {"error": "inputs[0]: binary element 0 says 99 bytes, 2 follow"}
