"""Seed 003's custom operator: every `(x - y) ^ 2` (a Sub whose output a Pow squares) becomes one
`PowerDifference(x, y)` node in a custom domain, run two ways:

- native: the graph carries PowerDifference as an ONNX model-local function whose body is Sub then Mul
  (d * d); ONNX Runtime inlines it and runs its own compiled kernels. This is the "equivalent fused
  rewrite into standard ops" of the issue, not a hand-compiled C++ kernel: the onnxruntime wheel ships no
  C API headers to build one against.
- numpy: the same node executed by a Python function through onnxruntime-extensions (`onnx_op`), i.e.
  ORT calls back into NumPy for every PowerDifference node, as seed 003's NumPy implementation.

The Sub stays in the graph when something else reads it (the style network's instance norm divides by it),
so the rewrite changes only how the variance is computed, and the outputs must equal the original's.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnx.numpy_helper as nh
import onnxruntime as ort
from onnx import helper

from ..artifacts import read_info, write_onnx
from ..bench import BenchConfig, Runner, benchmark_many
from ..errors import QDeployError
from ..formats.sessions import cpu_session
from ..results import PowerDifferenceStudy, StudyRow
from ..targets import open_session
from ..targets.ort import session_runner
from ..tasks.image import ImageScorer

DOMAIN = "ai.onnx.contrib"   # onnxruntime-extensions' default custom-op domain
OP = "PowerDifference"
IMPLEMENTATIONS = ("native", "numpy")


def _const_value(model, name: str):
    for init in model.graph.initializer:
        if init.name == name:
            return nh.to_array(init)
    for n in model.graph.node:
        if n.op_type == "Constant" and n.output[0] == name:
            return nh.to_array(n.attribute[0].t)
    return None


def rewrite(model, implementation: str = "native"):
    """A copy of `model` (onnx.ModelProto) with each Sub -> Pow(., 2) pair as one PowerDifference node.
    Returns (model, number of nodes rewritten)."""

    if implementation not in IMPLEMENTATIONS:
        raise QDeployError(f"PowerDifference implementation '{implementation}' is unknown; use native or numpy")
    m = onnx.ModelProto()
    m.CopyFrom(model)
    producer = {o: n for n in m.graph.node for o in n.output}
    new_nodes, count = [], 0
    for n in m.graph.node:
        sub = producer.get(n.input[0]) if n.op_type == "Pow" else None
        exp = _const_value(m, n.input[1]) if sub is not None else None
        if sub is not None and sub.op_type == "Sub" and exp is not None and exp.size == 1 and float(exp) == 2.0:
            new_nodes.append(helper.make_node(OP, [sub.input[0], sub.input[1]], [n.output[0]],
                                              name=f"{n.name or 'pow'}_PowerDifference", domain=DOMAIN))
            count += 1
        else:
            new_nodes.append(n)
    del m.graph.node[:]
    m.graph.node.extend(new_nodes)
    if not count:
        return m, 0
    # Sub nodes whose only reader was the Pow are now dead: drop them
    read = {i for n in m.graph.node for i in n.input} | {o.name for o in m.graph.output}
    live = [n for n in m.graph.node if n.op_type != "Sub" or any(o in read for o in n.output)]
    del m.graph.node[:]
    m.graph.node.extend(live)
    if not any(o.domain == DOMAIN for o in m.opset_import):
        m.opset_import.append(helper.make_opsetid(DOMAIN, 1))
    if implementation == "native":
        body = [helper.make_node("Sub", ["x", "y"], ["d"]), helper.make_node("Mul", ["d", "d"], ["z"])]
        std = next(o.version for o in m.opset_import if o.domain in ("", "ai.onnx"))
        m.functions.append(helper.make_function(DOMAIN, OP, ["x", "y"], ["z"], body,
                                                [helper.make_opsetid("", std)]))
    return m, count


_REGISTERED = []
CALLS = {"numpy": 0}   # how many times ORT called the NumPy kernel (tests check it really ran)


def _register_numpy_op() -> None:
    """Define the NumPy kernel once per process (onnxruntime-extensions keeps a global registry)."""
    if _REGISTERED:
        return
    try:
        from onnxruntime_extensions import PyCustomOpDef, onnx_op
    except ImportError as exc:
        raise QDeployError("the NumPy PowerDifference needs onnxruntime-extensions; pip install "
                           "onnxruntime-extensions") from exc

    @onnx_op(op_type=OP, domain=DOMAIN, inputs=[PyCustomOpDef.dt_float, PyCustomOpDef.dt_float],
             outputs=[PyCustomOpDef.dt_float])
    def power_difference(x, y):
        CALLS["numpy"] += 1
        d = np.subtract(x, y, dtype=np.float32)
        return d * d

    _REGISTERED.append(power_difference)


def session(path: str | Path, implementation: str, threads: int | None = None):
    """An ORT session for a rewritten model (the NumPy one with the extensions library registered)."""

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = int(threads)
    if implementation == "numpy":
        from onnxruntime_extensions import get_library_path

        _register_numpy_op()
        opts.register_custom_ops_library(get_library_path())
    return cpu_session(str(path), opts)


def _runner(path: Path, implementation: str | None, fixed: dict, threads: int | None):
    """x -> first output, image by image (the style graph takes one image), fixed inputs fed."""

    if implementation is None:

        return open_session(path, threads).run
    return session_runner(session(path, implementation, threads))


def study(fp32: Path, int8: Path | None, images: np.ndarray, out: Path, runs: int = 30,
          threads: int | None = None, log=print) -> PowerDifferenceStudy:
    """Seed 003's three-model comparison: original / PowerDifference-native / PowerDifference-NumPy, each in
    FP32 and (when an INT8 file keeps its Sub->Pow pairs) INT8. Every output is compared with the original
    FP32 output on `images` (PSNR, SSIM, max |error|); latency is timed interleaved, batch 1."""


    fixed = read_info(fp32).fixed_inputs
    files: dict[str, tuple[Path, str | None]] = {"fp32": (fp32, None)}
    counts = {}
    for label, src in (("fp32", fp32), ("int8", int8)):
        if src is None:
            continue
        files.setdefault(label, (src, None))
        model = onnx.load(str(src))
        for impl in IMPLEMENTATIONS:
            m, n = rewrite(model, impl)
            counts[f"{label}"] = n
            if n == 0:
                break
            dst, _ = write_onnx(m, out / f"{src.stem}_pd_{impl}.onnx", {"variant": f"{label}-pd-{impl}",
                                                                         "power_difference": impl})
            files[f"{label} PowerDifference-{impl}"] = (dst, impl)
    runners = {k: _runner(p, impl, fixed, threads) for k, (p, impl) in files.items()}
    ref = runners["fp32"](images)
    rows = {}
    for k, fn in runners.items():
        before = CALLS["numpy"]
        got = fn(images)
        sc = ImageScorer(with_reference=True)
        sc.update(got, None, ref)
        m = sc.result()
        rows[k] = StudyRow(file=files[k][0].name, psnr=m.psnr_mean, psnr_min=m.psnr_min, ssim=m.ssim_mean,
                           max_abs_diff=m.max_abs_diff, numpy_calls=CALLS["numpy"] - before)
        log(f"PowerDifference study {k}: max |diff| vs original FP32 {m.max_abs_diff:.2e}, PSNR {m.psnr_mean:.2f} dB")
    timed = {k: Runner(fn=fn, size_bytes=files[k][0].stat().st_size, runtime="onnxruntime"
                       + (" + onnxruntime-extensions (NumPy)" if files[k][1] == "numpy" else ""))
             for k, fn in runners.items()}
    bench = benchmark_many(timed, images[:1], BenchConfig(runs=runs, warmup=3, batch_sizes=(1,), min_seconds=0.0,
                                                          min_iters=1))
    for k, b in bench.items():
        rows[k].p50_ms, rows[k].p99_ms = b.p50_ms, b.p99_ms
    return PowerDifferenceStudy(
        images=len(images), rewritten_nodes=counts, rows=rows, int8_file=int8.name if int8 else None,
        native="ONNX model-local function (Sub, Mul) inlined by ONNX Runtime: its own compiled kernels",
        numpy="onnxruntime-extensions Python op: ORT calls a NumPy function per node")
