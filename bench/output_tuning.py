"""What output tuning buys EfficientNet-Lite0 in ImageNet mode, and what it costs (nothing at run time, minutes here).

    .venv/bin/python bench/output_tuning.py [--calib 300] [--cifar-eval 1000] [--runs 200]

The ImageNet EfficientNet-Lite0 on the images of `bench/bias_correction.py` (calibrated on CIFAR-10 training
images; compared with FP32 on CIFAR-10 test images upscaled + the 24 Kodak photos, label-free). Rows: the
`default` recipe; `tuned` (default + output tuning, quantize/output_tuning.py) at 1, 2 and 4 epochs; and both with
the costliest activation (ranked by `tensor_sensitivity`, as the auto search's fallback does) kept float. Agreement
with FP32, top-5 overlap, rel-L2 on every evaluation image; quantize time; batch-1 latency of every file timed
interleaved in one process (the tuned files must run as fast as the untuned: same graph, same integer weights).

Then (also alone with --floor-only) how far top-1 on these images moves under perturbations much smaller than INT8:
FP32 with its weights rounded to fp16 or bfloat16 (activations FP32), and the default INT8 file run by ORT with
its graph optimizations (fused integer kernels) against the same file without them (DequantizeLinear + float
ops: the same math up to requantization rounding); the default file's 8-bit activations with FP32's own weights
and biases put back (what activation quantization alone costs); the default and tuned INT8 files against FP32; each row's
agreement split by FP32's own top-1/top-2 logit gap and by source (upscaled CIFAR-10 vs Kodak), and FP32's gap
quantiles.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bias_correction import imagenet_mode, images_line, lite0_fp32  # noqa: E402

from qdeploy.bench import BenchConfig, benchmark_many  # noqa: E402
from qdeploy.quantize import QuantConfig, quantize  # noqa: E402
from qdeploy.quantize.sensitivity import tensor_sensitivity  # noqa: E402
from qdeploy.targets import open_session, run_batched  # noqa: E402
from qdeploy.targets.ort import exact_math_session  # noqa: E402
from qdeploy.tasks.classification import metrics_from_logits  # noqa: E402


def _rounded_weights(fp32: Path, out: Path, kind: str) -> Path:
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(fp32))
    for init in m.graph.initializer:
        a = numpy_helper.to_array(init)
        if a.dtype == np.float32 and a.size > 1:
            if kind == "fp16":
                r = a.astype(np.float16).astype(np.float32)
            else:   # bfloat16, round to nearest even on the top 16 bits
                u = a.view(np.uint32).astype(np.uint64)
                r = ((u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFF0000).astype(np.uint32).view(np.float32)
            init.CopyFrom(numpy_helper.from_array(r, init.name))
    onnx.save(m, str(out))
    return out


def _float_weights(int8: Path, fp32: Path, out: Path) -> Path:
    """The QDQ file `int8` with every Conv/Gemm's weight and bias put back to FP32's own (float initializers in
    place of DequantizeLinear of int8/int32): INT8 activations on the file's own grids, weights untouched."""
    import onnx

    f = onnx.load(str(fp32))
    ref_inputs = {n.name: list(n.input) for n in f.graph.node if n.op_type in ("Conv", "Gemm")}
    m = onnx.load(str(int8))
    names = {i.name for i in m.graph.initializer}
    swapped = 0
    for n in m.graph.node:
        if n.op_type in ("Conv", "Gemm") and n.name in ref_inputs:
            for k in (1, 2):
                if k < len(n.input) and k < len(ref_inputs[n.name]):
                    src, dst = ref_inputs[n.name][k], ref_inputs[n.name][k] + "__fp32"
                    if dst not in names:
                        init = onnx.TensorProto()
                        init.CopyFrom(next(i for i in f.graph.initializer if i.name == src))
                        init.name = dst
                        m.graph.initializer.append(init)
                        names.add(dst)
                    n.input[k] = dst
                    swapped += 1
    missing = [n.name for n in m.graph.node if n.op_type in ("Conv", "Gemm") and n.name not in ref_inputs]
    if missing or not swapped:
        raise SystemExit(f"{int8}: Conv/Gemm nodes {missing[:3]} not in FP32's graph; cannot put float weights back")
    onnx.save(m, str(out))
    return out


def floor(fp32: Path, int8: Path, ev: np.ndarray, ref: np.ndarray, tmp: Path, n_cifar: int,
          more: dict[str, Path]) -> None:
    rows = []
    for kind in ("fp16", "bf16"):
        out = run_batched(open_session(_rounded_weights(fp32, tmp / f"{kind}.onnx", kind)), ev)
        rows.append((f"FP32, weights rounded to {kind}", ref, out))
    unfused = run_batched(exact_math_session(int8), ev, batch_size=16)
    fused = run_batched(open_session(int8), ev)
    rows.append(("default INT8: ORT optimized vs unoptimized", unfused, fused))
    # unoptimized, the exact math of the file (also keeps these float weights float: see
    # qdeploy.targets.ort.DISABLED_OPTIMIZERS)
    act_only = run_batched(exact_math_session(_float_weights(int8, fp32, tmp / "act_only.onnx")), ev, batch_size=16)
    rows.append(("default INT8's activation grids, FP32's weights (INT8 activations only) vs FP32", ref, act_only))
    rows.append(("default INT8 vs FP32", ref, fused))
    rows += [(f"{label} INT8 vs FP32", ref, run_batched(open_session(p), ev)) for label, p in more.items()]
    top2 = np.sort(ref, 1)[:, -2:]
    gap = top2[:, 1] - top2[:, 0]
    # where the disagreements are: by FP32's own top-1/top-2 logit gap, and by source (CIFAR upscaled vs Kodak)
    edges = (0.0, 0.1, 0.3, 1.0, np.inf)
    cols = [(f"gap {lo:g}-{hi:g}", (gap >= lo) & (gap < hi)) for lo, hi in zip(edges, edges[1:])]
    cols += [("CIFAR", np.arange(len(ev)) < n_cifar), ("Kodak", np.arange(len(ev)) >= n_cifar)]
    print(f"\n| perturbation | top-1 agreement % ({len(ev)} images) | rel-L2 | "
          + " | ".join(f"{n} ({m.sum()})" for n, m in cols) + " |")
    print("|---|---|---|" + "---|" * len(cols))
    for label, a, b in rows:
        same = a.argmax(1) == b.argmax(1)
        cells = [f"{100 * same[m].mean():.1f}" if m.any() else "–" for _, m in cols]
        print(f"| {label} | {100 * same.mean():.2f} | {np.linalg.norm(b - a) / np.linalg.norm(a):.4f} | "
              + " | ".join(cells) + " |")
    q = np.quantile(gap, [0.01, 0.03, 0.05, 0.10, 0.5])
    print("\nFP32 top-1/top-2 logit gap quantiles 1/3/5/10/50 %: " + ", ".join(f"{v:.3f}" for v in q), flush=True)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calib", type=int, default=300)
    ap.add_argument("--cifar-eval", type=int, default=1000)
    ap.add_argument("--epochs", default="1,2")
    ap.add_argument("--floor-only", action="store_true", help="only the perturbation table")
    ap.add_argument("--runs", type=int, default=200)
    args = ap.parse_args()
    weights, spec, names, calib, ev = imagenet_mode(args.calib, args.cifar_eval, "bench/output_tuning.py")
    print(f"EfficientNet-Lite0 (ImageNet), {images_line(calib, ev, args.cifar_eval, spec)}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        fp32 = lite0_fp32(tmp, weights, calib, names, spec)
        ref = run_batched(open_session(fp32), ev)
        files = {"fp32": fp32}
        if args.floor_only:
            base = tmp / "default.onnx"
            quantize(fp32, base, QuantConfig.default(), calib, verify_batch=ev[:64], guard=False)
            tuned = tmp / "tuned.onnx"
            quantize(fp32, tuned, QuantConfig.default().with_(tune_epochs=2), calib, verify_batch=ev[:64], guard=False)
            floor(fp32, base, ev, ref, tmp, args.cifar_eval, {"tuned (2 epochs)": tuned})
            return 0

        def make(label: str, cfg: QuantConfig):
            path = tmp / f"f{len(files)}.onnx"
            t0 = time.perf_counter()
            quantize(fp32, path, cfg, calib, verify_batch=ev[:64], guard=False)
            secs = time.perf_counter() - t0
            cmp = metrics_from_logits(run_batched(open_session(path), ev), None, names, ref)
            rows.append((label, cmp, secs))
            files[label] = path
            print(f"  {label}: agreement {100 * cmp.agreement:.2f} %, {secs:.0f} s", flush=True)
            return path

        base = make("default", QuantConfig.default())
        for e in [int(v) for v in args.epochs.split(",")]:
            make(f"tuned, {e} epoch{'s' if e > 1 else ''}", QuantConfig.default().with_(tune_epochs=e))
        site = tensor_sensitivity(fp32, base, ev[:64])[0]
        print(f"  costliest activation: {site['tensor']} (nodes {', '.join(site['nodes'])})", flush=True)
        keep = QuantConfig.default().with_(nodes_to_exclude=list(site["nodes"]))
        make("default, stem output float", keep)
        make("tuned (2 epochs), stem output float", keep.with_(tune_epochs=2))
        floor(fp32, base, ev, ref, tmp, args.cifar_eval, {k: v for k, v in files.items() if k.startswith("tuned")})
        t = benchmark_many(files, ev[:8], BenchConfig(runs=args.runs, warmup=10, batch_sizes=(1,), min_seconds=0.0,
                                                      min_iters=1))
    print(f"\n| file | agreement % ({len(ev)} images) | top-5 overlap % | rel-L2 | quantize s | b1 p50 ms | "
          "speedup vs FP32 |")
    print("|---|---|---|---|---|---|---|")
    print(f"| fp32 | – | – | – | – | {t['fp32'].p50_ms:.2f} | 1.00x |")
    for label, cmp, secs in rows:
        b = t[label]
        print(f"| {label} | {100 * cmp.agreement:.2f} | {100 * cmp.top5_overlap:.1f} | {cmp.rel_l2:.3f} | {secs:.0f} | "
              f"{b.p50_ms:.2f} | {t['fp32'].p50_ms / b.p50_ms:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
