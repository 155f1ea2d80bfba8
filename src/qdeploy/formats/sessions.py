"""Opening an ONNX Runtime session: one function, so every session qdeploy opens (targets, quantizers, graph
tools, compilers) has the same transformers turned off."""
from __future__ import annotations

import onnxruntime as ort

# ONNX Runtime's WeightBiasQuantization transformer (ORT_ENABLE_BASIC and up) quantizes, at load time, the float
# weight of any Conv/Gemm that sits between a DequantizeLinear and a QuantizeLinear, to symmetric *per-tensor*
# int8: exactly the nodes qdeploy keeps in FP32 on purpose (auto's fallback, --exclude). Measured on the ImageNet
# EfficientNet-Lite0 with three depthwise convs kept float: rel-L2 from FP32 0.604 / agreement 38.8 % with it,
# 0.109 / 87.5 % without (the same file with nothing kept float: 0.109 / 87.9 %). Off in every session qdeploy opens.
DISABLED_OPTIMIZERS = ("WeightBiasQuantization",)


def cpu_session(src, opts=None, providers=("CPUExecutionProvider",), **kwargs):
    """ort.InferenceSession with DISABLED_OPTIMIZERS off: how qdeploy opens every ONNX Runtime session."""

    return ort.InferenceSession(src, opts, providers=list(providers), disabled_optimizers=list(DISABLED_OPTIMIZERS),
                                **kwargs)
