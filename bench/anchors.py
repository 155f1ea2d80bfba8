"""qdeploy against the field: every INT8 variant of a run on every installed target, timed in one process beside
the ORT FP32 reference and OpenVINO+NNCF (the anchor), with how far each is from this machine's limit.

    .venv/bin/python bench/anchors.py RUN_DIR [RUN_DIR ...] [--runs 300] [--targets ort-cpu,openvino-cpu]
                                      [--profile VARIANT]

Per run directory (a `qdeploy run` with the nncf variant among its variants): batch-1 p50/p99 interleaved across
every (variant, target), each as a ratio to the nncf variant's p50, and the arithmetic floor: the model's MACs
(counted on the FP32 graph at batch 1) divided by the machine's measured INT8 GEMM peak (a 1024^3 u8 x s8
MatMulInteger in ONNX Runtime, all cores, best of 20). Quality comes from the run's report (evaluated on the
run's full evaluation set; a target a run did not evaluate shows no quality). --profile VARIANT prints ONNX
Runtime's per-op-type time for that variant against the same peak: what bounds it.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from qdeploy.artifacts import read_info
from qdeploy.bench import BenchConfig, benchmark_many, cpu_name, session_runner
from qdeploy.formats.sessions import cpu_session
from qdeploy.graph.macs import count_macs
from qdeploy.results import RunResult
from qdeploy.targets import DEFAULT_TARGET, TARGETS, get_target

GEMM = 1024


def int8_gemm_peak(n: int = GEMM, repeats: int = 20) -> float:
    """GMAC/s of an n^3 u8 x s8 MatMulInteger (constant s8 weights, as in a quantized layer), best of `repeats`."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.integers(-127, 128, (n, n), dtype=np.int8), "w")
    graph = helper.make_graph([helper.make_node("MatMulInteger", ["a", "w"], ["y"])], "gemm",
                              [helper.make_tensor_value_info("a", TensorProto.UINT8, [n, n])],
                              [helper.make_tensor_value_info("y", TensorProto.INT32, [n, n])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    s = cpu_session(model.SerializeToString())
    a = rng.integers(0, 256, (n, n), dtype=np.uint8)
    s.run(None, {"a": a})
    best = min(_timed(lambda: s.run(None, {"a": a})) for _ in range(repeats))
    del onnx
    return n ** 3 / best / 1e9


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _quality(rep: RunResult, name: str, target: str) -> str:
    v = rep.get(name)
    m = v.metrics if target == v.target else (v.on.get(target).metrics if target in v.on else None)
    fp32 = rep.fp32.metrics
    if m is None:
        return "not evaluated"
    if hasattr(m, "psnr_mean"):   # image-to-image: PSNR against ORT FP32's output images
        return "reference" if m.psnr_mean is None else f"{m.psnr_mean:.2f} dB (worst {m.psnr_min:.2f})"
    if m.top1 is None:
        return f"agreement {m.agreement:.2%}" if m.agreement is not None else "reference"
    drop = (fp32.top1 - m.top1) * 100
    agree = f", agreement {m.agreement:.2%}" if m.agreement is not None else ""
    return f"top-1 {m.top1:.2%} (drop {drop:+.2f} pt{agree})"


def _models(run: Path, rep: RunResult, targets: list[str]) -> dict[str, tuple[str, Path, str]]:
    """key -> (variant, file, target): FP32 on each target, each verified variant on each target that reads it."""
    out = {}
    for v in rep.variants:
        if not v.ok:
            continue
        for t in ([v.target] if v.target != DEFAULT_TARGET else targets):
            out[f"{v.name}@{t}"] = (v.name, run / v.file, t)
    return out


def anchors(run: Path, peak: float, runs: int, targets: list[str]) -> None:
    rep = RunResult.load(run / "report.json")
    if rep.get("nncf") is None or not rep.get("nncf").ok:
        print(f"{run}: no verified nncf variant; re-run with --variants ...,nncf", file=sys.stderr)
        return
    spec = read_info(run / "fp32.onnx").require_preprocess()
    macs = count_macs(run / "fp32.onnx", (3, *spec.shape)).total
    floor_ms = macs / (peak * 1e9) * 1e3
    models = _models(run, rep, targets)
    sample = np.random.default_rng(0).random((1, 3, *spec.shape), dtype=np.float32)
    runners = {k: session_runner(path, target=t) for k, (_, path, t) in models.items()}
    res = benchmark_many(runners, sample, BenchConfig(runs=runs, batch_sizes=(1,), min_seconds=0.5))
    anchor = res["nncf@openvino-cpu"].p50_ms
    ref = res[f"fp32@{DEFAULT_TARGET}"].p50_ms
    print(f"\n### {run.name}: {macs / 1e9:.3f} GMAC per image at {spec.shape[0]}x{spec.shape[1]}; arithmetic floor "
          f"{floor_ms:.3f} ms at the INT8 GEMM peak\n")
    print("| variant | target | runtime | p50 ms | p99 ms | x nncf | speedup vs ORT FP32 | x floor | quality (run's eval set) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for k, r in sorted(res.items(), key=lambda kv: kv[1].p50_ms):
        name, _, t = models[k]
        print(f"| {name} | {t} | {r.runtime} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | {r.p50_ms / anchor:.2f} | "
              f"{ref / r.p50_ms:.2f}x | {r.p50_ms / floor_ms:.1f} | {_quality(rep, name, t)} |")


def profile(run: Path, variant: str, peak: float, runs: int = 50) -> None:
    """ONNX Runtime's profiler on one variant: time per op type, and the Conv/Gemm work it does against the peak."""
    import onnxruntime as ort

    rep = RunResult.load(run / "report.json")
    v = rep.get(variant)
    spec = read_info(run / "fp32.onnx").require_preprocess()
    macs = count_macs(run / "fp32.onnx", (3, *spec.shape)).total
    with tempfile.TemporaryDirectory() as tmp:
        opts = ort.SessionOptions()
        opts.enable_profiling = True
        opts.profile_file_prefix = str(Path(tmp) / "p")
        s = cpu_session(str(run / v.file), opts)
        feeds = {s.get_inputs()[0].name: np.random.default_rng(0).random((1, 3, *spec.shape), dtype=np.float32)}
        from qdeploy.fixed_inputs import arrays

        feeds.update(arrays(read_info(run / v.file).fixed_inputs))
        for _ in range(runs):
            s.run(None, feeds)
        events = json.loads(Path(s.end_profiling()).read_text())
    per_op: dict[str, float] = {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            op = e.get("args", {}).get("op_name", "?")
            per_op[op] = per_op.get(op, 0.0) + e["dur"] / 1e3 / runs
    total = sum(per_op.values())
    print(f"\n### profile: {variant} of {run.name} (ONNX Runtime, {runs} runs, ms per image)\n")
    print("| op type | ms | share |")
    print("|---|---|---|")
    for op, ms in sorted(per_op.items(), key=lambda kv: -kv[1])[:12]:
        print(f"| {op} | {ms:.3f} | {ms / total:.1%} |")
    conv = sum(ms for op, ms in per_op.items() if op in ("QLinearConv", "ConvInteger", "Conv", "FusedConv",
                                                         "NchwcConv", "MatMulInteger", "QGemm", "Gemm"))
    print(f"\nkernel time {total:.3f} ms; conv/GEMM kernels {conv:.3f} ms doing {macs / 1e9:.3f} GMAC = "
          f"{macs / max(conv, 1e-9) / 1e6:.0f} GMAC/s, {macs / max(conv, 1e-9) / 1e6 / peak:.0%} of the INT8 GEMM "
          f"peak {peak:.0f} GMAC/s; the rest ({total - conv:.3f} ms) is data movement and element-wise ops")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--runs", dest="n", type=int, default=300)
    ap.add_argument("--targets", default="ort-cpu,openvino-cpu")
    ap.add_argument("--profile", default=None, help="variant to profile per op type in ONNX Runtime")
    args = ap.parse_args()
    targets = [t for t in args.targets.split(",") if t in TARGETS and get_target(t).available()]
    peak = int8_gemm_peak()
    print(f"{cpu_name()}, {len(__import__('os').sched_getaffinity(0))} cores: INT8 GEMM peak {peak:.0f} GMAC/s "
          f"({GEMM}^3 u8 x s8 MatMulInteger, ONNX Runtime); targets {', '.join(targets)}")
    for run in args.runs:
        anchors(run, peak, args.n, targets)
        if args.profile:
            profile(run, args.profile, peak)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
