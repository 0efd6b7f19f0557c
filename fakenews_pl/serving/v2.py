"""The Open Inference Protocol (KServe's v2 REST API, which Triton, KServe and Seldon MLServer
and their clients speak) beside the server's own routes:

    GET  /v2/health/live, /v2/health/ready        200 {"live": true} / {"ready": true}
    GET  /v2                                      server metadata
    GET  /v2/models/{name}, /v2/models/{name}/ready
         metadata: input `text` BYTES [-1]; outputs `probabilities` FP32 [-1, 2] (columns in
         class order) and `label` BYTES [-1]
    POST /v2/models/{name}/infer                  tensors in, tensors out: JSON, or with the
                                                  binary tensor data extension

An inference runs the same function as `POST /predict` (`respond`), so its probabilities are
the same float32 values. Errors are the protocol's error object, `{"error": "<one line>"}`,
which is the server's own.

The binary tensor data extension (what `tritonclient` sends by default): the request's
`Inference-Header-Content-Length` header gives the length of its JSON part; the `text`
tensor's elements may follow it as bytes (its `parameters.binary_data_size`: each element a
4-byte little-endian length, then its UTF-8 bytes). An output asked for with
`parameters.binary_data` (or every output, with the request's `binary_data_output`) comes back
as bytes after the JSON part (`probabilities` as little-endian float32, `label` as BYTES), the
response's `Inference-Header-Content-Length` saying where its JSON ends.
"""

import json
import struct
from collections.abc import Callable
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

INPUT = "text"
OUTPUTS = ("probabilities", "label")
# The binary extension announces itself with this header (its JSON part's length).
BINARY_HEADER = "inference-header-content-length"
BINARY_EXTENSION = "binary_tensor_data"


class TensorError(ValueError):
    """A request the protocol cannot serve: (status, one line)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def metadata(name: str, class_names: list[str]) -> dict[str, Any]:
    """The model's metadata, as `GET /v2/models/{name}` returns it."""
    return {
        "name": name,
        "versions": ["1"],
        "platform": "pytorch",
        "inputs": [{"name": INPUT, "datatype": "BYTES", "shape": [-1]}],
        "outputs": [
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, len(class_names)]},
            {"name": "label", "datatype": "BYTES", "shape": [-1]},
        ],
        "parameters": {"class_names": class_names},
    }


def split_body(raw: bytes, header_length: str | None) -> tuple[Any, bytes]:
    """(the JSON part decoded, the binary rest) of an infer request body; without the binary
    extension's header the whole body is JSON. A `TensorError` naming what is wrong."""
    if header_length is None:
        json_part, rest = raw, b""
    else:
        digits = header_length.isascii() and header_length.isdigit() and len(header_length) < 20
        if not digits or int(header_length) > len(raw):
            raise TensorError(
                400, f"Inference-Header-Content-Length: {header_length[:40]!r}, expected the "
                f"length of the JSON part, at most the body's {len(raw):,} bytes"
            )  # fmt: skip
        json_part, rest = raw[: int(header_length)], raw[int(header_length) :]
    try:
        return json.loads(json_part), rest
    except RecursionError:
        raise TensorError(400, "body: malformed JSON: nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise TensorError(400, f"body: malformed JSON: {exc}") from None


def _object(value: Any, where: str) -> dict[str, Any]:
    """`value` when it is a JSON object (absent: {}), else a `TensorError` naming `where`."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise TensorError(400, f"{where}: expected an object")
    return value


def _count(value: Any) -> bool:
    """Whether `value` is a JSON integer >= 0 (not a boolean, not 2.0)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _binary_elements(blob: bytes, count: int) -> list[str]:
    """`count` BYTES elements (4-byte little-endian length, then the bytes) decoded as UTF-8,
    filling `blob` exactly, or a `TensorError` naming the element."""
    texts, at = [], 0
    for i in range(count):
        if at + 4 > len(blob):
            raise TensorError(400, f"inputs[0]: binary data ends before element {i} of {count}")
        (size,) = struct.unpack_from("<I", blob, at)
        element = blob[at + 4 : at + 4 + size]
        if len(element) != size:
            raise TensorError(
                400, f"inputs[0]: binary element {i} says {size:,} bytes, {len(element):,} follow"
            )  # fmt: skip
        try:
            texts.append(element.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise TensorError(400, f"inputs[0].data[{i}]: not UTF-8 at byte {exc.start}") from None
        at += 4 + size
    if at != len(blob):
        raise TensorError(
            400, f"inputs[0]: {len(blob) - at:,} bytes of binary data after its {count} elements"
        )  # fmt: skip
    return texts


def read_texts(
    body: Any, max_texts: int, max_text_chars: int, binary: bytes = b""
) -> tuple[list[str], list[tuple[str, bool]]]:
    """(texts, [(output name, as binary)] asked for) of an infer request, or a `TensorError`
    naming the field: exactly one input `text`, datatype BYTES, shape [N] with N strings (JSON
    `data`, or `binary` after the JSON part, `parameters.binary_data_size` long), within the
    limits; `outputs` a list of distinct known outputs. N is checked against `max_texts`
    before any text is read."""
    if not isinstance(body, dict):
        raise TensorError(400, "body: expected a JSON object with `inputs`")
    inputs = body.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise TensorError(400, f"inputs: expected one tensor named {INPUT!r}")
    tensor = inputs[0]
    if tensor.get("name") != INPUT:
        raise TensorError(400, f"inputs[0].name: expected {INPUT!r}, got {tensor.get('name')!r}")
    if tensor.get("datatype") != "BYTES":
        raise TensorError(
            400, f"inputs[0].datatype: expected BYTES, got {tensor.get('datatype')!r}"
        )
    shape = tensor.get("shape")
    if not (isinstance(shape, list) and len(shape) == 1 and _count(shape[0])):
        raise TensorError(400, f"inputs[0].shape: {str(shape)[:40]}, expected [N] for N texts")
    if shape[0] > max_texts:
        raise TensorError(
            413, f"inputs[0]: {shape[0]:,} texts, at most {max_texts} per request; send them in "
            "several requests"
        )  # fmt: skip
    size = _object(tensor.get("parameters"), "inputs[0].parameters").get("binary_data_size")
    if "data" in tensor:
        data = tensor["data"]
        if not isinstance(data, list) or not all(isinstance(t, str) for t in data):
            raise TensorError(400, "inputs[0].data: expected a list of strings")
        if shape != [len(data)]:
            raise TensorError(400, f"inputs[0].shape: {shape}, expected [{len(data)}] for its data")
        for i, text in enumerate(data):
            if not text.isascii():
                try:
                    text.encode("utf-8")
                except UnicodeEncodeError:
                    raise TensorError(
                        400, f"inputs[0].data[{i}]: not valid Unicode (a lone surrogate: "
                        "\\ud800-\\udfff escapes come in pairs)"
                    ) from None  # fmt: skip
    elif size is None:
        raise TensorError(400, "inputs[0].data: missing, and no parameters.binary_data_size")
    elif not _count(size) or size != len(binary):
        raise TensorError(
            400, f"inputs[0].parameters.binary_data_size: {str(size)[:40]}, but {len(binary):,} "
            "bytes follow the JSON part"
        )  # fmt: skip
    else:
        data = _binary_elements(binary, shape[0])
    for i, text in enumerate(data):
        if len(text) > max_text_chars:
            raise TensorError(
                400, f"inputs[0].data[{i}]: {len(text):,} characters, at most "
                f"{max_text_chars:,} per text"
            )  # fmt: skip
    parameters = _object(body.get("parameters"), "parameters")
    all_binary = parameters.get("binary_data_output") is True
    wanted = body.get("outputs")
    if wanted is None:
        wanted = [{"name": name} for name in OUTPUTS]
    if not isinstance(wanted, list) or not all(isinstance(o, dict) for o in wanted):
        raise TensorError(400, 'outputs: expected a list of objects, e.g. [{"name": "label"}]')
    outputs = []
    for i, output in enumerate(wanted):
        name = output.get("name")
        if name not in OUTPUTS:
            raise TensorError(
                400, f"outputs: {str(name)[:40]!r} is not an output; expected {OUTPUTS}"
            )
        if name in (n for n, _ in outputs):
            raise TensorError(400, f"outputs: {name!r} is asked for twice")
        options = _object(output.get("parameters"), f"outputs[{i}].parameters")
        outputs.append((name, options.get("binary_data", all_binary) is True))
    return data, outputs


def _bytes_tensor(values: list[str]) -> bytes:
    """BYTES elements as the binary extension lays them out."""
    encoded = [v.encode("utf-8") for v in values]
    return b"".join(struct.pack("<I", len(e)) + e for e in encoded)


def add_routes(
    app: FastAPI,
    name: str,
    class_names: list[str],
    respond: Callable[[list[str]], dict[str, Any]],
    max_texts: int,
    max_text_chars: int,
) -> None:
    """Add the protocol's routes to `app`, serving model `name` through `respond` (the
    server's `/predict` function: texts -> {"predictions": [{"label", "probabilities"}]})."""
    described = metadata(name, class_names)

    def unknown(model: str) -> JSONResponse:
        return JSONResponse(
            {"error": f"model {model!r}: not served here; this server serves {name!r}"},
            status_code=404,
        )

    @app.get("/v2/health/live")
    async def live() -> JSONResponse:
        """The process answers."""
        return JSONResponse({"live": True})

    @app.get("/v2/health/ready")
    async def ready() -> JSONResponse:
        """The model is loaded (it is, once the app exists)."""
        return JSONResponse({"ready": True})

    @app.get("/v2")
    async def server_metadata() -> JSONResponse:
        """The server's name and the protocol extensions it serves."""
        return JSONResponse(
            {"name": "fakenews_pl", "version": "1", "extensions": [BINARY_EXTENSION]}
        )

    @app.get("/v2/models/{model}")
    async def model_metadata(model: str) -> JSONResponse:
        """Inputs, outputs and class names of the served model."""
        return JSONResponse(described) if model == name else unknown(model)

    @app.get("/v2/models/{model}/ready")
    async def model_ready(model: str) -> JSONResponse:
        """Whether `model` is the one served (and so ready)."""
        return JSONResponse({"name": name, "ready": True}) if model == name else unknown(model)

    @app.post("/v2/models/{model}/infer")
    async def infer(model: str, request: Request) -> Response:
        """Probabilities and labels of the `text` tensor's strings."""
        if model != name:
            return unknown(model)
        try:
            body, binary = split_body(await request.body(), request.headers.get(BINARY_HEADER))
            texts, wanted = read_texts(body, max_texts, max_text_chars, binary)
        except TensorError as exc:
            return JSONResponse({"error": str(exc)}, status_code=exc.status)
        predictions = respond(texts)["predictions"] if texts else []
        probabilities = [
            value for p in predictions for value in (p["probabilities"][c] for c in class_names)
        ]
        labels = [p["label"] for p in predictions]
        tensors = {
            "probabilities": {
                "name": "probabilities", "datatype": "FP32",
                "shape": [len(texts), len(class_names)], "data": probabilities,
            },
            "label": {"name": "label", "datatype": "BYTES", "shape": [len(texts)], "data": labels},
        }  # fmt: skip
        blobs = {
            # The JSON decimals are the float32 values' shortest forms: the same bits.
            "probabilities": lambda: np.asarray(probabilities, dtype="<f4").tobytes(),
            "label": lambda: _bytes_tensor(labels),
        }
        outputs, tail = [], []
        for output, as_binary in wanted:
            tensor = dict(tensors[output])
            if as_binary:
                tail.append(blobs[output]())
                del tensor["data"]
                tensor["parameters"] = {"binary_data_size": len(tail[-1])}
            outputs.append(tensor)
        answer = {"model_name": name, "model_version": "1", "outputs": outputs}
        if isinstance(body.get("id"), str):
            answer["id"] = body["id"]
        if not tail:
            return JSONResponse(answer)
        head = json.dumps(answer, separators=(",", ":")).encode("utf-8")
        return Response(
            head + b"".join(tail),
            media_type="application/octet-stream",
            headers={"Inference-Header-Content-Length": str(len(head))},
        )
