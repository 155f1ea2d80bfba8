"""OpenVINO on the CPU: runs qdeploy's FP32 and QDQ INT8 ONNX files, OpenVINO IR from the nncf variant, and
compiled blobs written by `qdeploy compile` (the offline form: `import_model`, no graph compilation).

OpenVINO picks its own "FP32" precision per CPU: bf16 where the CPU has AMX/AVX-512-BF16 (measured on such a
machine: 2.2x faster than f32 on the style network, 45 dB from it), f32 elsewhere. qdeploy pins
INFERENCE_PRECISION_HINT=f32 by default, so an "FP32" row is FP32, and records the precision the compiled
model reports in every Session; `precision="auto"` keeps OpenVINO's own choice and labels it.
"""
from __future__ import annotations

import importlib.util
import io
import os
from pathlib import Path

import numpy as np

from ..artifacts import raw_meta
from ..errors import ModelFileError
from ..fixed_inputs import arrays, from_metadata
from ..formats.ir import ir_meta
from .base import Session, Target
from .ort import cpu_flags

BLOB_SUFFIX = ".blob"
# CPU flags (/proc/cpuinfo) of native bf16 arithmetic: AVX-512 BF16 (dot products) or AMX tiles
BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


def ov_config(precision: str = "f32", threads: int | None = None) -> dict:
    """The one compile configuration: the same for online compilation and for the blob written offline."""
    config = {"PERFORMANCE_HINT": "LATENCY"}
    if precision != "auto":
        config["INFERENCE_PRECISION_HINT"] = precision
    if threads:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    return config


def precision_of(compiled) -> str:
    """'f32', 'bf16', ... from the compiled model's INFERENCE_PRECISION_HINT (printed as <Type: 'float32'>)."""
    raw = str(compiled.get_property("INFERENCE_PRECISION_HINT"))
    return raw.split("'")[-2] if "'" in raw else raw


def load_error(exc: Exception) -> str:
    """The line of an OpenVINO load failure that says what is wrong: the ops it could not convert (a QOperator or
    contrib-op graph), else the first failed check, else the first line."""
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    if not lines:
        return type(exc).__name__
    ops = sorted({ln.split(" with a message")[0].lstrip("- ").split("-")[0] for ln in lines
                  if ln.startswith("--") and " with a message" in ln}
                 | {op.strip() for ln in lines if ln.startswith("-- No conversion rule found for operations:")
                    for op in ln.split(":", 1)[1].split(",")})
    if ops:
        return f"it does not convert the ops {', '.join(ops)} (a QOperator or contrib-op graph; QDQ files run)"[:300]
    return next((ln for ln in lines if ln.startswith("Check ")), lines[0])[:200]


class OpenVinoCpu(Target):
    name = "openvino-cpu"
    package = "openvino"
    device = "cpu"
    precision = "f32"    # "auto": OpenVINO's default (bf16 on CPUs that have it)

    def available(self) -> bool:
        return importlib.util.find_spec("openvino") is not None

    def _load(self, core, path: Path, config: dict):
        """(model or None, compiled): read + compile a graph, or import a compiled blob."""
        if path.suffix == BLOB_SUFFIX:

            return None, core.import_model(io.BytesIO(path.read_bytes()), "CPU", config)
        model = core.read_model(str(path))
        return model, core.compile_model(model, "CPU", config)

    def open(self, path, threads: int | None = None, spinning: bool = True, config: dict | None = None) -> Session:
        """config: compile properties added to ov_config's (a server's own, e.g. OVMS's plugin_config)."""
        try:
            import openvino as ov
        except ImportError as exc:
            raise ModelFileError("the openvino-cpu target needs OpenVINO; pip install 'qdeploy[openvino]'") from exc

        path = Path(path)
        try:
            model, compiled = self._load(ov.Core(), path, {**ov_config(self.precision, threads), **(config or {})})
        except Exception as exc:
            raise ModelFileError(f"OpenVINO cannot load {path.name}: {load_error(exc)}") from exc
        if path.suffix == ".xml":   # the IR is read already: its rt_info holds qdeploy's metadata

            meta = ir_meta(model)
        else:

            meta = raw_meta(path)
        stored = arrays(from_metadata(meta))
        first = compiled.inputs[0]
        name = first.get_any_name()
        dim0 = first.get_partial_shape()[0]
        one = dim0.is_static and dim0.get_length() == 1
        request = compiled.create_infer_request()
        out0 = compiled.outputs[0]

        def run(x, fixed: dict | None = None):
            feeds = {**stored, **(fixed or {})}
            if one and len(x) > 1:
                return np.concatenate([run(x[i:i + 1], fixed) for i in range(len(x))])
            res = request.infer({name: x, **feeds})
            return np.array(res[out0], copy=True)

        precision = precision_of(compiled)
        return Session(path=path, run=run, input_name=name,
                       runtime=f"openvino {ov.get_version().split('-')[0]} ({precision})",
                       provider="CPU", threads=int(threads or compiled.get_property("INFERENCE_NUM_THREADS") or os.cpu_count()),
                       info={"compiled": compiled, "precision": precision})


class OpenVinoBf16(OpenVinoCpu):
    """OpenVINO computing float layers in bfloat16 (INFERENCE_PRECISION_HINT=bf16; an INT8 file's integer layers stay
    integer): the FP32 file here is a bf16 deployment. Only where the CPU does bf16 natively (BF16_FLAGS); elsewhere
    OpenVINO would emulate it, slower than f32, so the target reports itself unavailable."""

    name = "openvino-cpu-bf16"
    precision = "bf16"
    reduced_float = "bf16"

    def available(self, flags: frozenset[str] | None = None) -> bool:
        return super().available() and bool((cpu_flags() if flags is None else flags) & BF16_FLAGS)
