"""How long `quantize` takes, stage by stage: the shared ResNet18 exported once, then each recipe quantized in turn,
interleaved over --repeats rounds in one process (the median of each is printed), on the same calibration images.

    .venv/bin/python bench/quantize_time.py [--calib 100] [--repeats 3] [--recipes default,nearest,dynamic]

`default` is the main job's recipe (GPTQ weight rounding + bias correction); `nearest` is the same recipe with ORT's
rounding and no bias correction, so default - nearest is what the two passes cost; the GPTQ pass is also timed on
its own (`round_weights` on the same files). Prints the CPU and its ISA flags with the table.
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from onnxruntime.quantization.shape_inference import quant_pre_process

from qdeploy.bench import cpu_name
from qdeploy.data import DataConfig, PreprocessSpec, open_calib
from qdeploy.export import export
from qdeploy.models import load_model
from qdeploy.quantize import QuantConfig, quantize, weight_rounding
from qdeploy.quantize.ort import _weight_rounding, clear_statistics
from qdeploy.recipes import preset
from qdeploy.settings import shared_dir
from qdeploy.targets.ort import cpu_flags

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def recipes(names: list[str]) -> dict[str, QuantConfig]:
    out = {}
    for n in names:
        if n == "nearest":
            out[n] = QuantConfig.default().with_(name="nearest", weight_rounding="nearest", bias_correction=False)
        else:
            out[n] = preset(n)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calib", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--recipes", default="default,nearest,dynamic")
    a = ap.parse_args()
    shared = shared_dir()
    if shared is None:
        print("needs ../shared (the ResNet18 checkpoint and CIFAR-10): set QDEPLOY_SHARED", file=sys.stderr)
        return 2
    spec = PreprocessSpec()
    calib = open_calib(DataConfig(root=str(shared / "datasets" / "cifar10"), calib_size=a.calib)).load(spec)
    work = Path(tempfile.mkdtemp(prefix="qdeploy-qtime-"))
    try:
        fp32, _ = export(load_model("resnet18-cifar", shared / "checkpoints" / "resnet18_cifar10.pth"),
                         work / "fp32.onnx", calib[:64], CLASSES, spec)
        cfgs = recipes(a.recipes.split(","))
        times: dict[str, list[float]] = {n: [] for n in cfgs}
        gptq_s: list[float] = []
        for _ in range(a.repeats):                      # interleaved: each round times every recipe once
            for n, cfg in cfgs.items():
                clear_statistics()                      # ranges, means and H are shared per (graph, images)
                t = time.perf_counter()
                quantize(fp32, work / f"{n}.onnx", cfg, calib, guard=False)
                times[n].append(time.perf_counter() - t)
            if "nearest" in cfgs:                       # the GPTQ pass alone, on a copy of the nearest file
                pre, raw = work / "pre.onnx", work / "raw.onnx"
                quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
                shutil.copy(work / "nearest.onnx", raw)
                weight_rounding._cache.clear()
                t = time.perf_counter()
                _weight_rounding(pre, raw, calib, "input", {})
                gptq_s.append(time.perf_counter() - t)
        flags = " ".join(f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_int8") if f in cpu_flags())
        print(f"CPU: {cpu_name()} ({flags}); seed ResNet18, {len(calib)} calibration images, median of {a.repeats}")
        print("| recipe | quantize s |\n|---|---|")
        for n, ts in times.items():
            print(f"| {n} | {statistics.median(ts):.2f} |")
        if gptq_s:
            print(f"| GPTQ pass alone (round_weights) | {statistics.median(gptq_s):.2f} |")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
