"""Issue 36's latency columns: each zoo architecture at its ImageNet size (224 px, 1000 classes), FP32 and INT8
(qdeploy's `default` and `transformer` recipes, OpenVINO+NNCF INT8) on ONNX Runtime and OpenVINO, batch-1 p50
interleaved in one process (bench.benchmark_many), as ratios to ORT FP32 and to NNCF.

    .venv/bin/python bench/zoo_latency.py [--archs resnet50,vit_tiny_patch16_224] [--runs 100] [--out runs/zoo]

Weights are random (seeded): no pretrained weights can be downloaded here and latency does not depend on their
values, so this table says nothing about accuracy (docs/zoo.md says what that needs). Calibration: 16 Kodak photos
from ../shared. The INT8 files use nearest rounding (GPTQ and bias correction change no op, so no latency).
"""
from __future__ import annotations

import argparse
import datetime
import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from qdeploy.bench import BenchConfig, benchmark_many, cpu_name, session_runner
from qdeploy.data import IMAGENET_MEAN, IMAGENET_STD, PreprocessSpec
from qdeploy.export import export
from qdeploy.graph.attention import has_attention
from qdeploy.models import build_model
from qdeploy.quantize import quantize
from qdeploy.recipes import QuantConfig
from qdeploy.results import Environment
from qdeploy.settings import shared_dir
from qdeploy.targets.ort import cpu_isa

ARCHS = ("resnet50", "mobilenet_v3_small", "efficientnet_b0", "regnet_y_400mf", "convnext_atto",
         "vit_tiny_patch16_224", "swin_tiny_patch4_window7_224")


def nncf_ir(fp32: Path, calib: np.ndarray, out: Path) -> Path:
    import nncf
    import openvino as ov

    extra = {"model_type": nncf.ModelType.TRANSFORMER} if has_attention(fp32) else {}
    q = nncf.quantize(ov.Core().read_model(str(fp32)), nncf.Dataset([calib[i:i + 1] for i in range(len(calib))]),
                      preset=nncf.QuantizationPreset.PERFORMANCE, subset_size=len(calib), **extra)
    ov.save_model(q, str(out), compress_to_fp16=False)
    return out


def one(arch: str, x: np.ndarray, work: Path, runs: int) -> dict:
    torch.manual_seed(0)
    model = build_model(arch, num_classes=1000, input_size=224).eval()
    t0 = time.perf_counter()
    fp32, _ = export(model, work / f"{arch}.onnx", x, [f"c{i}" for i in range(1000)],
                     PreprocessSpec(size=224, mean=IMAGENET_MEAN, std=IMAGENET_STD, resize="shorter-side-crop"))
    files = {"fp32": (fp32, "ort-cpu"), "fp32@ov": (fp32, "openvino-cpu")}
    recipes = {"default": QuantConfig.default().with_(weight_rounding="nearest", bias_correction=False)}
    if has_attention(fp32):
        recipes["transformer"] = QuantConfig.transformer().with_(weight_rounding="nearest", bias_correction=False)
    for name, cfg in recipes.items():
        path = work / f"{arch}_{name}.onnx"
        quantize(fp32, path, cfg.with_(min_agreement=0.0), x, verify_batch=x[:2], guard=False)
        files[name], files[f"{name}@ov"] = (path, "ort-cpu"), (path, "openvino-cpu")
    files["nncf"] = (nncf_ir(fp32, x, work / f"{arch}_nncf.xml"), "openvino-cpu")
    build_s = time.perf_counter() - t0
    res = benchmark_many({k: session_runner(p, target=t) for k, (p, t) in files.items()}, x[:1],
                         BenchConfig(runs=runs, warmup=10, batch_sizes=(1,)))
    p50 = {k: r.p50_ms for k, r in res.items()}
    return {"arch": arch, "params_m": sum(p.numel() for p in model.parameters()) / 1e6, "p50_ms": p50,
            "attention": has_attention(fp32), "build_s": build_s}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--archs", default=",".join(ARCHS))
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--out", default="runs/zoo")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    kodak = sorted((shared_dir() / "datasets" / "kodak24").glob("*.png"))[:16]
    spec = PreprocessSpec(size=224, mean=IMAGENET_MEAN, std=IMAGENET_STD, resize="shorter-side-crop")
    x = np.concatenate([spec(Image.open(p)) for p in kodak])
    rows = []
    for arch in args.archs.split(","):
        rows.append(one(arch, x, out, args.runs))
        print(json.dumps(rows[-1]), flush=True)
    env = Environment(cpu=cpu_name(), isa=cpu_isa())
    print(f"\n{datetime.date.today()}, {env.cpu} ({env.isa_summary()}), batch 1, {args.runs} runs, random weights\n")
    print("| arch | params M | ORT FP32 ms | INT8 on ORT (vs FP32) | INT8 on OpenVINO | OpenVINO FP32 | NNCF INT8 | "
          "best qdeploy INT8 vs NNCF |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        p = r["p50_ms"]
        ours = [k for k in p if k not in ("fp32", "fp32@ov", "nncf")]
        best = min(ours, key=p.get)
        ort = min((k for k in ours if "@" not in k), key=p.get)
        ov = min((k for k in ours if "@" in k), key=p.get)
        print(f"| {r['arch']} | {r['params_m']:.1f} | {p['fp32']:.2f} | {ort} {p[ort]:.2f} ({p['fp32'] / p[ort]:.2f}x) | "
              f"{ov.split('@')[0]} {p[ov]:.2f} | {p['fp32@ov']:.2f} | {p['nncf']:.2f} | {best} {p[best] / p['nncf']:.2f}x |")
    (out / "zoo_latency.json").write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
