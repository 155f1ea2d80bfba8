"""The KServe v2 / Open Inference Protocol beside qdeploy's own API, so Triton's clients talk to `qdeploy serve`:
GET /v2, /v2/health/live, /v2/health/ready, /v2/models/<name>[/ready], POST /v2/models/<name>/infer.

Tensors are preprocessed inputs, as Triton takes them (JSON `data`, or the binary tensor extension that
tritonclient uses by default: a JSON header of Inference-Header-Content-Length bytes, then raw tensors).
Model names are the variant names (served from a bundle, also the bundle's model names: a client written for
the Triton or OVMS deployment works unchanged). Each request runs the model once (no timing); a bad tensor (unknown name,
wrong datatype or shape, data that does not fill the shape, body over the limit) gets 400 with the reason.

FastAPI reads the route signatures' annotations at run time, so this module does not use postponed annotations.
"""
import json
import time

import numpy as np
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from .. import __version__
from .deps import BUSY, ServeState, check_auth, read_capped, served

V2_TYPES = {"FP32": np.float32, "FP16": np.float16, "FP64": np.float64, "INT64": np.int64, "INT32": np.int32,
            "INT8": np.int8, "UINT8": np.uint8, "BOOL": np.bool_}
MAX_BATCH = 64
router = APIRouter()


class TensorError(ValueError):
    """A request tensor that does not fit the model: the message is the 400's reason."""


def _np_to_v2(dtype) -> str:
    return next(k for k, v in V2_TYPES.items() if np.dtype(v) == np.dtype(dtype))


def model_metadata(v, spec) -> dict:
    """Inputs the client must send: the preprocessed image (batch open) and any fixed extra input."""
    inputs = [{"name": v.info.input_name, "datatype": "FP32", "shape": [-1, 3, *spec.shape]}]
    inputs += [{"name": k, "datatype": _np_to_v2(f["dtype"]), "shape": list(f["shape"]), "optional": True}
               for k, f in v.info.fixed_inputs.items()]
    return {"name": v.name, "versions": ["1"], "platform": "qdeploy_" + v.session.runtime.split()[0],
            "inputs": inputs, "outputs": [{"name": v.info.output_name, "datatype": "FP32", "shape": [-1, -1]}]}


def parse_request(body: bytes, header_length: "str | None") -> "tuple[dict, bytes]":
    """(JSON request, binary tail) from a v2 body with or without the binary tensor extension."""
    try:
        n = int(header_length) if header_length is not None else len(body)
        if not 0 < n <= len(body):
            raise TensorError(f"Inference-Header-Content-Length {n} does not fit the {len(body)}-byte body")
        req = json.loads(body[:n])
    except (ValueError, UnicodeDecodeError) as exc:
        if isinstance(exc, TensorError):
            raise
        raise TensorError(f"the request is not valid JSON ({type(exc).__name__})") from None
    if not isinstance(req, dict) or not isinstance(req.get("inputs"), list) or not req["inputs"]:
        raise TensorError("the request needs an 'inputs' list (KServe v2 inference request)")
    return req, body[n:]


def decode_inputs(req: dict, tail: bytes, v, spec) -> "tuple[np.ndarray, dict]":
    """(image batch, fixed extra inputs) checked against the model: names, datatypes, shapes, data size."""
    meta = {t["name"]: t for t in model_metadata(v, spec)["inputs"]}
    offset, arrays = 0, {}
    for t in req["inputs"]:
        if not isinstance(t, dict) or "name" not in t:
            raise TensorError("each input needs a name, shape, datatype and data")
        name = t["name"]
        if name not in meta:
            raise TensorError(f"unknown input '{name}'; model '{v.name}' takes {', '.join(meta)}")
        want = meta[name]
        if t.get("datatype") != want["datatype"]:
            raise TensorError(f"input '{name}' has datatype {t.get('datatype')}; the model takes {want['datatype']}")
        shape = t.get("shape")
        if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
            raise TensorError(f"input '{name}' needs a shape: a list of non-negative integers")
        fixed_dims = want["shape"][1:] if want["shape"][0] == -1 else want["shape"]
        got_dims = shape[1:] if want["shape"][0] == -1 else shape
        if len(shape) != len(want["shape"]) or got_dims != fixed_dims:
            raise TensorError(f"input '{name}' has shape {shape}; the model takes {want['shape']} (-1: batch)")
        if want["shape"][0] == -1 and not 1 <= shape[0] <= MAX_BATCH:
            raise TensorError(f"input '{name}' batch {shape[0]} must be 1..{MAX_BATCH}")
        dtype, count = V2_TYPES[want["datatype"]], int(np.prod(shape))
        size = (t.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            if size != count * np.dtype(dtype).itemsize or offset + size > len(tail):
                raise TensorError(f"input '{name}': binary_data_size {size} does not hold shape {shape} of "
                                  f"{want['datatype']}")
            arr = np.frombuffer(tail[offset:offset + size], dtype=dtype)
            offset += size
        else:
            try:
                arr = np.asarray(t.get("data"), dtype=dtype).reshape(-1)
            except (TypeError, ValueError):
                raise TensorError(f"input '{name}': data is not a flat list of {want['datatype']} numbers") from None
            if arr.size != count:
                raise TensorError(f"input '{name}': {arr.size} values do not fill shape {shape}")
        arrays[name] = arr.reshape(shape)
    image = arrays.pop(v.info.input_name, None)
    if image is None:
        raise TensorError(f"input '{v.info.input_name}' (the preprocessed image batch) is missing")
    return np.ascontiguousarray(image), arrays


def encode_outputs(req: dict, name: str, out: np.ndarray, model: str) -> "tuple[bytes, dict]":
    """(body, headers): JSON data, or binary when the request asked for it (tritonclient's default)."""
    wanted = {o.get("name"): o for o in req.get("outputs") or [] if isinstance(o, dict)}
    binary = bool((req.get("parameters") or {}).get("binary_data_output")) or \
        bool(((wanted.get(name) or {}).get("parameters") or {}).get("binary_data"))
    out = np.ascontiguousarray(out, np.float32)
    tensor = {"name": name, "datatype": "FP32", "shape": list(out.shape)}
    if binary:
        raw = out.tobytes()
        tensor["parameters"] = {"binary_data_size": len(raw)}
    else:
        tensor["data"] = out.reshape(-1).tolist()
    head = json.dumps({"model_name": model, "model_version": "1", "id": req.get("id", ""),
                       "outputs": [tensor]}).encode()
    if binary:
        return head + raw, {"Inference-Header-Content-Length": str(len(head)),
                            "Content-Type": "application/octet-stream"}
    return head, {"Content-Type": "application/json"}


def _model(s: ServeState, name: str):
    if name not in s.by_name:
        raise HTTPException(404, f"model '{name}' is not served here; models: {', '.join(s.by_name)}")
    return s.by_name[name]


@router.get("/v2")
def server_metadata():
    return {"name": "qdeploy", "version": __version__, "extensions": ["binary_tensor_data"]}


@router.get("/v2/health/live")
def live():
    return {"live": True}


@router.get("/v2/health/ready")
def ready():
    return {"ready": True}


@router.get("/v2/models/{name}", dependencies=[Depends(check_auth)])
def metadata(name: str, s: ServeState = Depends(served)):
    return {**model_metadata(_model(s, name), s.pred.spec), "name": name}


@router.get("/v2/models/{name}/ready", dependencies=[Depends(check_auth)])
def model_ready(name: str, s: ServeState = Depends(served)):
    _model(s, name)
    return {"name": name, "ready": True}


@router.post("/v2/models/{name}/infer", dependencies=[Depends(check_auth)])
async def infer(name: str, request: Request, s: ServeState = Depends(served)):
    v = _model(s, name)
    body = await read_capped(request, s.limits.max_bytes)
    if body is None:
        return JSONResponse({"error": f"request body exceeds the {s.limits.max_bytes / 2 ** 20:.0f} MB limit; send "
                                      "fewer images per request"}, status_code=400)
    try:
        req, tail = parse_request(body, request.headers.get("inference-header-content-length"))
        x, fixed = decode_inputs(req, tail, v, s.pred.spec)
    except TensorError as exc:
        return JSONResponse({"error": str(exc)}, status_code=400)

    def run():
        with s.gate:
            t0 = time.perf_counter()
            out = v.outputs(x, fixed or None)
            s.metrics.observe("/v2/models/{name}/infer", v.name, time.perf_counter() - t0)
            return out

    try:
        out = await run_in_threadpool(run)
    except OverflowError:
        return JSONResponse(BUSY, status_code=503)
    content, headers = encode_outputs(req, v.info.output_name, out, name)
    return Response(content, headers=headers)
