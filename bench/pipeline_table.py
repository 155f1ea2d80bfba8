"""Full pipeline on the shared checkpoint and the full 10,000-image CIFAR-10 test set, every variant.

Prints one table: size, top-1, agreement with FP32, batch-1 p50 latency and speedup vs ORT FP32,
all measured in this one process (latency interleaved across variants).

    .venv/bin/python bench/pipeline_table.py [--out runs/bench] [--variants all]
"""
from __future__ import annotations

import argparse
import sys
import time

from qdeploy.data import DataConfig
from qdeploy.pipeline import RunConfig, run
from qdeploy.settings import default_checkpoint, default_data
from qdeploy.source import SourceConfig


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="runs/bench")
    ap.add_argument("--variants", default="all")
    ap.add_argument("--checkpoint", default=str(default_checkpoint()))
    ap.add_argument("--data", default=str(default_data()))
    ap.add_argument("--qat-from", help="pt-qat: INT8 weights from a QAT run on a GPU (bench/gpu/qat_r18.py)")
    ap.add_argument("--qat-epochs", type=int, help="pt-qat trained here: epochs (default 1)")
    ap.add_argument("--qat-train-limit", type=int, help="pt-qat trained here: training images (default 2000; 0 = all)")
    args = ap.parse_args()
    t0 = time.perf_counter()
    cfg = RunConfig(out=args.out, data=DataConfig(root=args.data), source=SourceConfig(checkpoint=args.checkpoint),
                    variants=args.variants,
                    torch_overrides={"qat_from": args.qat_from, "qat_epochs": args.qat_epochs,
                                     "qat_train_limit": args.qat_train_limit})
    res = run(cfg, log=lambda m: print(m, file=sys.stderr))
    rows = [v for v in res.variants if v.measured]
    fp32 = res.fp32
    print(f"\nqdeploy pipeline table: {res.data.eval_images} test images, {res.environment.cpu}, "
          f"{res.environment.threads} threads, {res.environment.runtime}")
    print("| variant | size MB | % of FP32 | top-1 % | drop pt | agreement % | b1 p50 ms | b1 p99 ms | speedup vs FP32 |")
    print("|---|---|---|---|---|---|---|---|---|")  # ONNX Runtime rows; PyTorch-runtime rows follow
    for v in rows:
        m, b = v.metrics, v.bench
        agree = "–" if m.agreement is None else f"{100 * m.agreement:.2f}"
        print(f"| {v.name} | {b.size_bytes / 1e6:.2f} | {100 * b.size_bytes / fp32.bench.size_bytes:.1f} | "
              f"{100 * m.top1:.2f} | {100 * (fp32.metrics.top1 - m.top1):+.2f} | {agree} | "
              f"{b.p50_ms:.2f} | {b.p99_ms:.2f} | {fp32.bench.p50_ms / b.p50_ms:.2f}x |")
    for v in res.variants:
        if not v.ok:
            print(f"| {v.name} | FAILED: {v.error} |")
    from qdeploy.report import paired_table, torch_table

    tt = torch_table(res)
    if tt:
        print("\nPyTorch-native INT8, measured in PyTorch in the same process:\n" + tt)
    print("\nEach INT8 variant against FP32, image by image (exact McNemar test):\n" + (paired_table(res) or "–"))
    for v in res.variants:
        for rt, p in v.facts.vs_ptq.items():
            print(f"{v.name} vs pt-ptq ({rt}): QAT alone right on {p.only_this}, PTQ alone on {p.only_ref}, "
                  f"net {p.diff_pt:+.2f} pt, McNemar p = {p.p_value:.3f}; QAT returned epoch {v.facts.qat_epoch}")
    print(f"\nrecommended: {res.recommended}; wall time {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
