"""The Open Inference Protocol (KServe's v2 REST API, which Triton, KServe and Seldon MLServer
and their clients speak) beside the server's own routes:

    GET  /v2/health/live, /v2/health/ready        200 {"live": true} / {"ready": true}
    GET  /v2                                      server metadata
    GET  /v2/models/{name}, /v2/models/{name}/ready
         metadata: input `text` BYTES [-1]; outputs `probabilities` FP32 [-1, 2] (columns in
         class order) and `label` BYTES [-1]
    POST /v2/models/{name}/infer                  JSON tensors in, JSON tensors out

An inference runs the same function as `POST /predict` (`respond`), so its probabilities are
the same float32 values. Errors are the protocol's error object, `{"error": "<one line>"}`,
which is the server's own. The binary tensor extension is refused in one line (JSON only).
"""

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

INPUT = "text"
OUTPUTS = ("probabilities", "label")
# The binary extension announces itself with this header (its JSON part's length).
BINARY_HEADER = "inference-header-content-length"


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


def read_texts(body: Any, max_texts: int, max_text_chars: int) -> tuple[list[str], list[str]]:
    """(texts, outputs asked for) of an infer request body, or a `TensorError` naming the field:
    exactly one input `text`, datatype BYTES, shape [N] with N strings, within the limits."""
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
    if "data" not in tensor:
        raise TensorError(400, "inputs[0].data: missing (binary tensors are not served: JSON only)")
    data, shape = tensor["data"], tensor.get("shape")
    if not isinstance(data, list) or not all(isinstance(t, str) for t in data):
        raise TensorError(400, "inputs[0].data: expected a list of strings")
    if shape != [len(data)]:
        raise TensorError(400, f"inputs[0].shape: {shape}, expected [{len(data)}] for its data")
    if len(data) > max_texts:
        raise TensorError(
            413, f"inputs[0]: {len(data)} texts, at most {max_texts} per request; send them in "
            "several requests"
        )  # fmt: skip
    for i, text in enumerate(data):
        if len(text) > max_text_chars:
            raise TensorError(
                400, f"inputs[0].data[{i}]: {len(text):,} characters, at most "
                f"{max_text_chars:,} per text"
            )  # fmt: skip
    wanted = body.get("outputs") or [{"name": name} for name in OUTPUTS]
    names = [o.get("name") if isinstance(o, dict) else o for o in wanted]
    unknown = [n for n in names if n not in OUTPUTS]
    if unknown:
        raise TensorError(400, f"outputs: {unknown[0]!r} is not an output; expected {OUTPUTS}")
    return data, names


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
        """The server's name and the protocol extensions it serves (none)."""
        return JSONResponse({"name": "fakenews_pl", "version": "1", "extensions": []})

    @app.get("/v2/models/{model}")
    async def model_metadata(model: str) -> JSONResponse:
        """Inputs, outputs and class names of the served model."""
        return JSONResponse(described) if model == name else unknown(model)

    @app.get("/v2/models/{model}/ready")
    async def model_ready(model: str) -> JSONResponse:
        """Whether `model` is the one served (and so ready)."""
        return JSONResponse({"name": name, "ready": True}) if model == name else unknown(model)

    @app.post("/v2/models/{model}/infer")
    async def infer(model: str, request: Request) -> JSONResponse:
        """Probabilities and labels of the `text` tensor's strings."""
        if model != name:
            return unknown(model)
        if BINARY_HEADER in request.headers:
            message = "binary tensor data is not served: send JSON tensors (binary_data=False)"
            return JSONResponse({"error": message}, status_code=400)
        try:
            body = await request.json()
        except ValueError as exc:
            return JSONResponse({"error": f"body: malformed JSON: {exc}"}, status_code=400)
        try:
            texts, wanted = read_texts(body, max_texts, max_text_chars)
        except TensorError as exc:
            return JSONResponse({"error": str(exc)}, status_code=exc.status)
        predictions = respond(texts)["predictions"] if texts else []
        probabilities = [
            value for p in predictions for value in (p["probabilities"][c] for c in class_names)
        ]
        tensors = {
            "probabilities": {
                "name": "probabilities", "datatype": "FP32",
                "shape": [len(texts), len(class_names)], "data": probabilities,
            },
            "label": {
                "name": "label", "datatype": "BYTES", "shape": [len(texts)],
                "data": [p["label"] for p in predictions],
            },
        }  # fmt: skip
        answer = {"model_name": name, "model_version": "1", "outputs": [tensors[n] for n in wanted]}
        if isinstance(body.get("id"), str):
            answer["id"] = body["id"]
        return JSONResponse(answer)
