"""Which activations cost EfficientNet-Lite0's INT8 output most, and what keeping the costliest float buys.

    .venv/bin/python bench/activation_sites.py [--calib 300] [--cifar-eval 1000] [--sites 3] [--runs 200]

The ImageNet EfficientNet-Lite0 in ImageNet mode (the images of `bench/bias_correction.py`: calibrated on CIFAR-10
training images, compared with FP32 on CIFAR-10 test images upscaled + the 24 Kodak photos). First the table of
`tensor_sensitivity` (quantize/sensitivity.py): every activation the default recipe's QDQ file quantizes, quantized
ALONE in the FP32 graph, and what that costs the output (rel-L2 vs FP32, top-1 flips) on 64 evaluation images,
beside the local error node_sensitivity charges to its producer. Then the default recipe again with the costliest
1..N activations kept float (`float_site_nodes`: their producers and consumers unquantized): agreement with FP32
on every evaluation image and batch-1 latency, all files timed interleaved in one process.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bias_correction import imagenet_mode, images_line, lite0_fp32  # noqa: E402

from qdeploy.bench import BenchConfig, benchmark_many  # noqa: E402
from qdeploy.quantize import QuantConfig, quantize  # noqa: E402
from qdeploy.quantize.sensitivity import node_sensitivity, tensor_sensitivity  # noqa: E402
from qdeploy.targets import open_session, run_batched  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calib", type=int, default=300)
    ap.add_argument("--cifar-eval", type=int, default=1000)
    ap.add_argument("--sites", type=int, default=3, help="files with the 1..N costliest activations kept float")
    ap.add_argument("--runs", type=int, default=200)
    args = ap.parse_args()
    weights, spec, names, calib, ev = imagenet_mode(args.calib, args.cifar_eval, "bench/activation_sites.py")
    cfg = QuantConfig.default()
    print(f"EfficientNet-Lite0 (ImageNet), `default` recipe ({cfg.description}); "
          f"{images_line(calib, ev, args.cifar_eval, spec)}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        fp32 = lite0_fp32(tmp, weights, calib, names, spec)
        ref = run_batched(open_session(fp32), ev).argmax(1)
        base = tmp / "default.onnx"
        quantize(fp32, base, cfg, calib, verify_batch=ev[:64], guard=False)
        rows = tensor_sensitivity(fp32, base, ev[:64])   # reads only the file's activation scales
        local = {r["tensor"]: r["added_error"] for r in node_sensitivity(fp32, base, ev[:64])}
        print("\n| rank | activation (quantized alone) | produced by | output rel-L2 vs FP32 | top-1 flips % (64 "
              "images) | local error of the producer (node_sensitivity) |")
        print("|---|---|---|---|---|---|")
        for i, r in enumerate(rows[:10], 1):
            loc = local.get(r["tensor"])
            print(f"| {i} | `{r['tensor']}` | {r['kind']} | {r['output_rel_error']:.4f} | {100 * r['flips']:.1f} | "
                  f"{'–' if loc is None else f'{loc:.4f}'} |", flush=True)
        files, excluded = {"fp32": fp32, "default": base}, []
        for k, r in enumerate(rows[: args.sites], 1):
            excluded += [n for n in r["nodes"] if n not in excluded]
            files[f"default + {k} float"] = path = tmp / f"float{k}.onnx"
            quantize(fp32, path, cfg.with_(nodes_to_exclude=list(excluded)), calib, verify_batch=ev[:64], guard=False)
        agree = {k: 100 * float(np.mean(run_batched(open_session(p), ev).argmax(1) == ref)) for k, p in files.items()}
        t = benchmark_many(files, ev[:8], BenchConfig(runs=args.runs, warmup=10, batch_sizes=(1,), min_seconds=0.0,
                                                      min_iters=1))
    print(f"\n| file | activations kept float | nodes unquantized | agreement % ({len(ev)} images) | b1 p50 ms | "
          "speedup vs FP32 |")
    print("|---|---|---|---|---|---|")
    for i, (k, b) in enumerate(t.items()):
        kept = "all" if k == "fp32" else ", ".join(f"`{r['tensor']}`" for r in rows[: max(0, i - 1)]) or "none"
        n = len(set().union(*(r["nodes"] for r in rows[: max(0, i - 1)]))) if i > 1 else (0 if i else "–")
        print(f"| {k} | {kept} | {n} | {agree[k]:.2f} | {b.p50_ms:.2f} | {t['fp32'].p50_ms / b.p50_ms:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
