"""Issue 37's Triton fidelity figures: an INT8 file that keeps convs float, as qdeploy's session runs it (the
verified numbers) and as a host that sets only ORT's graph level runs it (Triton's onnxruntime backend, a plain
InferenceSession): the run's file, the bundle's Triton file (float convs as FusedConv, Triton's default level) and
the pre-optimised fallback (ORT's EXTENDED graph at level "none"). Max |diff| from the verified outputs on real
CIFAR-10 test images, top-1 agreement, and batch-1 p50 interleaved in one process (bench.benchmark_many).

    .venv/bin/python bench/bundle_fidelity.py [--images 200] [--runs 300] [--out runs/bundle-fidelity]
"""
from __future__ import annotations

import argparse
import datetime
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from qdeploy.bench import BenchConfig, Runner, benchmark_many, cpu_name
from qdeploy.data import DataConfig, PreprocessSpec, open_calib_eval
from qdeploy.formats.server_safe import preoptimize, server_safe
from qdeploy.quantize import QuantConfig, quantize
from qdeploy.recipes import kernel_types
from qdeploy.settings import shared_dir
from qdeploy.targets import open_session, run_batched
from qdeploy.targets.ort import cpu_isa, host_ort_session

R20 = Path(__file__).resolve().parents[1] / "src/qdeploy/bundled/resnet20_cifar10/fp32.onnx"
L = ort.GraphOptimizationLevel


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--runs", type=int, default=300)
    ap.add_argument("--out", default="runs/bundle-fidelity")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    calib, ev = open_calib_eval(DataConfig(root=str(shared_dir() / "datasets/cifar10"), calib_size=64,
                                           eval_limit=a.images))
    spec = PreprocessSpec()
    cx, ex = calib.load(spec), ev.load(spec)
    convs = [n.name for n in onnx.load(str(R20)).graph.node if n.op_type == "Conv"][3:6]
    cfg = QuantConfig(name="kept", per_channel=True, min_agreement=0.0, nodes_to_exclude=convs, **kernel_types("u8s8"))
    q, _ = quantize(R20, out / "kept.onnx", cfg, cx[:32], guard=False)
    rewritten = server_safe(q, out / "triton.onnx")
    preoptimize(q, out / "preopt.onnx")
    sessions = {"qdeploy session, run's file (verified)": open_session(q),
                "ORT defaults, run's file": host_ort_session(q, L.ORT_ENABLE_ALL),
                "ORT defaults, bundle's Triton file": host_ort_session(out / "triton.onnx", L.ORT_ENABLE_ALL),
                "ORT level none, pre-optimised file": host_ort_session(out / "preopt.onnx", L.ORT_DISABLE_ALL)}
    ref = run_batched(sessions["qdeploy session, run's file (verified)"], ex)
    scale = float(np.abs(ref).max())
    lat = benchmark_many({k: Runner(fn=s.run, size_bytes=0, runtime=s.runtime) for k, s in sessions.items()}, ex[:8],
                         BenchConfig(runs=a.runs, batch_sizes=(1,)))
    base = lat["qdeploy session, run's file (verified)"].p50_ms
    rows = []
    for k, s in sessions.items():
        got = run_batched(s, ex)
        d = float(np.abs(got - ref).max())
        rows.append({"how": k, "max_abs_diff": d, "of_largest_logit": d / scale,
                     "top1_agreement": float((got.argmax(1) == ref.argmax(1)).mean()),
                     "p50_ms": lat[k].p50_ms, "vs_verified": lat[k].p50_ms / base})
    env = {"date": datetime.date.today().isoformat(), "cpu": cpu_name(), "isa": cpu_isa(), "ort": ort.__version__,
           "images": len(ex), "kept_float": convs, "rewritten": rewritten}
    print(f"# bundle fidelity ({env['date']}, {env['cpu']}, ISA {' '.join(env['isa']) or 'baseline'}, "
          f"onnxruntime {env['ort']}, {len(ex)} CIFAR-10 test images, ResNet-20 with {len(convs)} convs float)\n")
    print("| how it is run | max abs diff from verified | of largest logit | top-1 agreement | p50 ms | vs verified |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['how']} | {r['max_abs_diff']:.4g} | {r['of_largest_logit']:.2%} | {r['top1_agreement']:.1%} | "
              f"{r['p50_ms']:.3f} | {r['vs_verified']:.2f}x |")
    (out / "bundle_fidelity.json").write_text(json.dumps({"env": env, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
