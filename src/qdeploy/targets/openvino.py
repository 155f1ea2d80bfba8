"""OpenVINO on the CPU: runs qdeploy's FP32 and QDQ INT8 ONNX files (and OpenVINO IR from the nncf variant).

OpenVINO picks its own "FP32" precision per CPU: bf16 where the CPU has AMX/AVX-512-BF16 (measured on such a
machine: 2.2x faster than f32 on the style network, 45 dB from it), f32 elsewhere. qdeploy pins
INFERENCE_PRECISION_HINT=f32 by default, so an "FP32" row is FP32, and records the precision the compiled
model reports in every Session; `precision="auto"` keeps OpenVINO's own choice and labels it.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import ModelFileError
from .base import Session, Target


class OpenVinoCpu(Target):
    name = "openvino-cpu"
    device = "cpu"
    precision = "f32"    # "auto": OpenVINO's default (bf16 on CPUs that have it)

    def available(self) -> bool:
        import importlib.util

        return importlib.util.find_spec("openvino") is not None

    def open(self, path, threads: int | None = None, spinning: bool = True) -> Session:
        import numpy as np

        try:
            import openvino as ov
        except ImportError as exc:
            raise ModelFileError("the openvino-cpu target needs OpenVINO; pip install 'qdeploy[openvino]'") from exc
        from ..artifacts import read_info
        from ..fixed_inputs import arrays

        path = Path(path)
        core = ov.Core()
        config = {"PERFORMANCE_HINT": "LATENCY"}
        if self.precision != "auto":
            config["INFERENCE_PRECISION_HINT"] = self.precision
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        try:
            model = core.read_model(str(path))
            compiled = core.compile_model(model, "CPU", config)
        except Exception as exc:
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise ModelFileError(f"OpenVINO cannot load {path.name}: {first}") from exc
        if path.suffix == ".onnx":
            stored = arrays(read_info(path).fixed_inputs)
        else:  # OpenVINO IR written by the nncf variant: qdeploy's metadata is in its rt_info
            import json

            from ..quantize.nncf_variant import ir_meta

            stored = arrays(json.loads(ir_meta(model).get("fixed_inputs") or "{}"))
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

        precision = str(compiled.get_property("INFERENCE_PRECISION_HINT")).split("'")[-2] \
            if "'" in str(compiled.get_property("INFERENCE_PRECISION_HINT")) else str(compiled.get_property("INFERENCE_PRECISION_HINT"))
        return Session(path=path, run=run, input_name=name, runtime=f"openvino {ov.get_version().split('-')[0]} ({precision})",
                       provider="CPU", threads=int(threads or compiled.get_property("INFERENCE_NUM_THREADS") or os.cpu_count()),
                       info={"compiled": compiled, "precision": precision})
