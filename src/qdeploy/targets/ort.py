"""ONNX Runtime on the CPU: today's target. Providers are detected from the installed build, once."""
from __future__ import annotations

import os
import platform
from functools import lru_cache
from pathlib import Path

import numpy as np
import onnxruntime as ort

from ..errors import ModelFileError
from ..fixed_inputs import arrays, from_metadata
from ..formats.keys import unprefixed
from ..formats.sessions import cpu_session, default_threads, host_session
from .base import Session, Target

ORT_SUFFIX = ".ort"   # ORT's own format: the graph after ORT_ENABLE_ALL, saved by `qdeploy compile`

@lru_cache(maxsize=None)
def available_providers() -> tuple[str, ...]:
    return tuple(ort.get_available_providers())


@lru_cache(maxsize=None)
def cpu_flags() -> frozenset[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


# the x86 features that decide which recipe and precision is fastest (VNNI: INT8 without AVX2's int16 saturation;
# BF16/AMX: native bfloat16 and tile INT8): what a report records beside its latencies
ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_int8")


def cpu_isa() -> list[str]:
    """The ISA_FLAGS this CPU has, in that order."""
    have = cpu_flags()
    return [f for f in ISA_FLAGS if f in have]


def cpu_has_vnni() -> bool:
    """x86 VNNI (AVX-512 or AVX) multiplies u8 x s8 into int32 without the int16 saturation of AVX2."""

    if platform.machine().lower() not in ("x86_64", "amd64"):
        return True  # ARM's dot-product kernels do not have the AVX2 problem
    return bool(cpu_flags() & {"avx512_vnni", "avx_vnni", "amx_int8"})


def physical_cores() -> int:
    """ORT's default intra-op pool uses one thread per physical core."""
    try:
        cores = {line.split(":")[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith("core id")}
        return len(cores) or os.cpu_count() or 1
    except OSError:
        return os.cpu_count() or 1


def session_runner(s):
    """x (n,3,h,w) -> the first output, feeding the fixed inputs stored in the model's metadata (a style
    vector, see fixed_inputs) and looping image by image when the graph's batch dimension is fixed at 1.
    `fixed=` replaces stored values for one call (the app's style picker)."""


    meta = unprefixed(s.get_modelmeta().custom_metadata_map.items())
    stored = arrays(from_metadata(meta))
    first = s.get_inputs()[0]
    name, one = first.name, first.shape[0] == 1

    def run(x, fixed: dict | None = None):
        feeds = {**stored, **(fixed or {})}
        if one and len(x) > 1:
            return np.concatenate([s.run(None, {name: x[i:i + 1], **feeds})[0] for i in range(len(x))])
        return s.run(None, {name: x, **feeds})[0]

    return run


class OrtCpu(Target):
    name = "ort-cpu"
    package = "onnxruntime"
    provider = "CPUExecutionProvider"

    def available(self) -> bool:
        return self.provider in available_providers()

    def open(self, path, threads: int | None = None, spinning: bool = True) -> Session:
        """threads=None lets ORT use every physical core. spinning=False stops idle pool threads from
        busy-waiting: right for a server holding several sessions, whose spinning threads would
        otherwise steal the cores from the one running."""

        opts = ort.SessionOptions()
        if not spinning:
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        offline = not isinstance(path, bytes) and str(path).endswith(ORT_SUFFIX)
        # the offline form (.ort, written by `qdeploy compile`) holds the graph ORT already optimised
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL if offline else \
            ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if offline:
            opts.add_session_config_entry("session.load_model_format", "ORT")
        return _session(path, opts, threads, self.provider)


def exact_math_session(path, threads: int | None = None) -> Session:
    """`path` run with every graph optimization off. A QDQ file then runs node by node (DequantizeLinear, the float
    op, QuantizeLinear): no fused integer kernel and no load-time rewrite touches it, so its outputs are the
    quantization's own math, the same on any CPU (a QOperator file's QLinear* nodes stay integer kernels). For
    checks that must tell a recipe from what a CPU's integer kernels do with it."""

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return _session(path, opts, threads, OrtCpu.provider)


def host_ort_session(path, level, threads: int | None = None) -> Session:
    """`path` as a host that sets only ORT's graph `level` runs it (Triton's onnxruntime backend, a plain
    InferenceSession): every transformer ORT has on by default runs, the ones qdeploy turns off included."""

    opts = ort.SessionOptions()
    opts.graph_optimization_level = level
    return _session(path, opts, threads, OrtCpu.provider, opener=host_session)


def _session(path, opts, threads: int | None, provider: str, opener=cpu_session) -> Session:
    threads = threads or default_threads()
    if threads:
        opts.intra_op_num_threads = int(threads)
    opts.log_severity_level = 3
    src = path if isinstance(path, bytes) else str(path)
    try:
        s = opener(src, opts, providers=[provider])
    except Exception as exc:
        first = str(exc).strip().splitlines()[0][:200]
        raise ModelFileError(f"ONNX Runtime cannot load {path if not isinstance(path, bytes) else 'model'}: "
                             f"{first}") from exc
    return Session(path=Path(path) if not isinstance(path, bytes) else Path("<memory>"),
                   run=session_runner(s), input_name=s.get_inputs()[0].name,
                   runtime=f"onnxruntime {ort.__version__}", provider=s.get_providers()[0],
                   threads=int(threads or physical_cores()), info={"ort_session": s})
