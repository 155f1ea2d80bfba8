"""ONNX Runtime's integer kernels on this CPU: agreement with FP32 and batch-1 latency, per (kernel, format).

    .venv/bin/python bench/kernels.py FP32.onnx [FP32.onnx ...] [--data ../shared/datasets/cifar10]

Each FP32 file (with qdeploy metadata: preprocessing) is quantized with u8s8, u8u8 and s8s8 (7-bit weights
where int8 weights saturate on a CPU without VNNI, as `kernel_types` decides), in QDQ and QOperator form,
calibrated on 300 training images; agreement and top-1 on 500 test images; latency interleaved with FP32.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from qdeploy.artifacts import read_info
from qdeploy.bench import BenchConfig, benchmark_many
from qdeploy.data import DataConfig, open_calib_eval
from qdeploy.quantize.ort import quantize
from qdeploy.recipes import KERNELS, QuantConfig, kernel_types
from qdeploy.settings import default_data
from qdeploy.targets import open_session, run_batched


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("models", nargs="+", type=Path)
    ap.add_argument("--data", default=str(default_data()))
    ap.add_argument("--runs", type=int, default=100)
    args = ap.parse_args()
    print("| model | kernel | format | agreement % | top-1 % | b1 p50 ms | speedup vs FP32 |")
    print("|---|---|---|---|---|---|---|")
    for fp32 in args.models:
        spec = read_info(fp32).require_preprocess()
        calib, ev = open_calib_eval(DataConfig(root=args.data, calib_size=300, eval_limit=500))
        cx, ex = calib.load(spec), ev.load(spec)
        ref = run_batched(open_session(fp32), ex)
        with tempfile.TemporaryDirectory() as tmp:
            models, acc = {"fp32": fp32}, {"fp32": (1.0, float((ref.argmax(1) == ev.labels).mean()))}
            for k in KERNELS:
                for fmt in ("QDQ", "QOperator"):
                    out = Path(tmp) / f"{k}_{fmt}.onnx"
                    quantize(fp32, out, QuantConfig(name=k, format=fmt, min_agreement=0.0, **kernel_types(k)), cx)
                    got = run_batched(open_session(out), ex).argmax(1)
                    acc[f"{k} {fmt}"] = (float((got == ref.argmax(1)).mean()), float((got == ev.labels).mean()))
                    models[f"{k} {fmt}"] = out
            r = benchmark_many(models, ex[:8], BenchConfig(runs=args.runs, warmup=10, batch_sizes=(1,), min_seconds=0.0,
                                                            min_iters=1))
        for name, b in r.items():
            kernel, _, fmt = name.partition(" ")
            a, t = acc[name]
            print(f"| {fp32} | {kernel} | {fmt or '–'} | {100 * a:.1f} | {100 * t:.1f} | {b.p50_ms:.2f} | "
                  f"{r['fp32'].p50_ms / b.p50_ms:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
