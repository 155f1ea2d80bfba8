"""Opening an ONNX Runtime session: one function, so every session qdeploy opens (targets, quantizers, graph
tools, compilers) has the same transformers turned off."""
from __future__ import annotations

import os

import onnxruntime as ort

from ..errors import ConfigError

# ONNX Runtime's WeightBiasQuantization transformer (ORT_ENABLE_BASIC and up) quantizes, at load time, the float
# weight of any Conv/Gemm that sits between a DequantizeLinear and a QuantizeLinear, to symmetric *per-tensor*
# int8: exactly the nodes qdeploy keeps in FP32 on purpose (auto's fallback, --exclude). Measured on the ImageNet
# EfficientNet-Lite0 with three depthwise convs kept float: rel-L2 from FP32 0.604 / agreement 38.8 % with it,
# 0.109 / 87.5 % without (the same file with nothing kept float: 0.109 / 87.9 %). Off in every session qdeploy opens.
DISABLED_OPTIMIZERS = ("WeightBiasQuantization",)


def default_threads() -> int | None:
    """Threads a runtime session uses when its caller gives none: $QDEPLOY_THREADS, else None (the runtime's own
    default: every physical core). For a machine several processes share (a test run on two workers, a CI box):
    one thread per session there, instead of every session's pool busy-waiting on every core."""
    raw = os.environ.get("QDEPLOY_THREADS", "").strip()
    if not raw:
        return None
    if not raw.isdigit() or int(raw) < 1:
        raise ConfigError(f"QDEPLOY_THREADS must be a whole number >= 1, not {raw!r}; unset it to use every core")
    return int(raw)


def cpu_session(src, opts=None, providers=("CPUExecutionProvider",), **kwargs):
    """ort.InferenceSession with DISABLED_OPTIMIZERS off: how qdeploy opens every ONNX Runtime session (with
    default_threads() where the options name no thread count)."""

    threads = default_threads()
    if threads and (opts is None or not opts.intra_op_num_threads):
        opts = opts or ort.SessionOptions()
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(src, opts, providers=list(providers), disabled_optimizers=list(DISABLED_OPTIMIZERS),
                                **kwargs)


def host_session(src, opts=None, providers=("CPUExecutionProvider",), **kwargs):
    """ort.InferenceSession with ONNX Runtime's own defaults, DISABLED_OPTIMIZERS included: how a host that sets
    only a graph level opens a file (Triton's onnxruntime backend, a user's plain InferenceSession). Only for
    checking what such a host computes; qdeploy's own sessions are cpu_session's."""

    return ort.InferenceSession(src, opts, providers=list(providers), **kwargs)
