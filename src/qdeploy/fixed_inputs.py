"""Extra model inputs fixed for a run (`--fixed-input style_weights=onehot:19`).

A model may take more than the image: the style network also reads a 26-way `style_weights` vector. A run
fixes such inputs once; they are written into every ONNX file's metadata (`qdeploy.fixed_inputs`), so the
runtime, the calibrator, the sensitivity analysis and the app all feed the same values without being told.
The app may replace them per request (another style) through `Session.run(x, fixed=...)`.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .errors import ConfigError

META_KEY = "fixed_inputs"
MAX_VALUES = 1 << 20  # metadata lives in the model file: a fixed input is a vector, not a tensor of images

_DTYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(int64)": np.int64,
           "tensor(int32)": np.int32, "tensor(float16)": np.float16, "tensor(uint8)": np.uint8,
           "tensor(bool)": np.bool_}


def _static_shape(shape) -> tuple[int, ...] | None:
    return tuple(shape) if all(isinstance(d, int) and d > 0 for d in shape) else None


def parse_one(text: str, inputs: dict[str, tuple]) -> tuple[str, np.ndarray, str]:
    """'NAME=onehot:K' | 'NAME=file.npy' | 'NAME=v1,v2,...' -> (name, array, spec) shaped and typed as the
    model's input `NAME` (inputs: name -> (shape, ORT type string))."""
    name, sep, spec = text.partition("=")
    name, spec = name.strip(), spec.strip()
    if not sep or not name or not spec:
        raise ConfigError(f"--fixed-input '{text}' is not NAME=VALUE; use e.g. style_weights=onehot:19, "
                          "style_weights=weights.npy or style_weights=0.5,0.5,...")
    if name not in inputs:
        raise ConfigError(f"--fixed-input names '{name}', which is not an input of the model (inputs: "
                          f"{', '.join(inputs)})")
    shape, typ = inputs[name]
    dtype = _DTYPES.get(typ, np.float32)
    static = _static_shape(shape)
    if spec.startswith("onehot:"):
        if static is None or len(static) != 1:
            raise ConfigError(f"onehot needs a 1-D input of known length; '{name}' has shape {list(shape)}; "
                              "give the values instead")
        try:
            k = int(spec[len("onehot:"):])
        except ValueError:
            raise ConfigError(f"--fixed-input {name}={spec}: onehot needs an index, e.g. onehot:19") from None
        if not 0 <= k < static[0]:
            raise ConfigError(f"--fixed-input {name}={spec}: index must be 0..{static[0] - 1}")
        arr = np.zeros(static, dtype)
        arr[k] = 1
    elif spec.endswith(".npy"):
        try:
            arr = np.load(Path(spec), allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"--fixed-input {name}: cannot read {spec} as a .npy array ({exc}); save it with "
                              "numpy.save") from exc
    else:
        try:
            arr = np.asarray([float(v) for v in spec.split(",")], dtype)
        except ValueError:
            raise ConfigError(f"--fixed-input {name}={spec}: not onehot:K, a .npy file or comma-separated "
                              "numbers") from None
    if arr.size > MAX_VALUES:
        raise ConfigError(f"--fixed-input {name} has {arr.size} values; at most {MAX_VALUES} are stored in the model")
    arr = np.asarray(arr, dtype)
    if static is not None and arr.shape != static:
        if arr.size != int(np.prod(static)):
            raise ConfigError(f"--fixed-input {name} has {arr.size} values; the model's input has shape {list(static)}")
        arr = arr.reshape(static)
    return name, arr, spec


def parse(texts: list[str] | None, inputs: dict[str, tuple], image_input: str) -> dict[str, dict]:
    """Every --fixed-input, checked against the model's inputs; every input other than the image must be given."""
    fixed = {}
    for t in texts or []:
        if t.partition("=")[0].strip() == image_input:
            raise ConfigError(f"'{image_input}' is the image input; --fixed-input is for the model's other inputs")
        name, arr, spec = parse_one(t, inputs)
        fixed[name] = {"spec": spec, "dtype": str(arr.dtype), "shape": list(arr.shape), "values": arr.ravel().tolist()}
    missing = [n for n in inputs if n != image_input and n not in fixed]
    if missing:
        raise ConfigError(f"the model has inputs besides the image that need values: {', '.join(missing)}; give "
                          f"--fixed-input {missing[0]}=... (onehot:K, a .npy file or comma-separated numbers)")
    return fixed


def arrays(fixed: dict[str, dict] | None) -> dict[str, np.ndarray]:
    """Metadata form -> the arrays fed beside the image."""
    return {k: np.asarray(v["values"], v["dtype"]).reshape(v["shape"]) for k, v in (fixed or {}).items()}


def from_metadata(meta: dict) -> dict[str, dict]:
    """The fixed inputs stored in a qdeploy ONNX file's metadata (key without the qdeploy. prefix)."""
    text = meta.get(META_KEY)
    return json.loads(text) if text else {}


def describe(fixed: dict[str, dict] | None) -> str:
    return ", ".join(f"{k}={v['spec']}" for k, v in (fixed or {}).items())
