"""On a lent GPU machine: QAT of the shared ResNet18 from its FP32 checkpoint; returns INT8 weights.

The converted INT8 state_dict comes back and goes through `qdeploy run --qat-from` here, so
export, evaluation and latency are measured on the CPU machine like every other variant.
    python3 bench/gpu/qat_r18.py CKPT TRAIN_NPZ[,TRAIN_NPZ...] OUT_DIR EPOCHS
"""
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, "src")

from qdeploy.data import DataConfig, PreprocessSpec, open_qat_sets  # noqa: E402
from qdeploy.models import load_model  # noqa: E402
from qdeploy.quantize.torch_eager import TORCH_PRESETS, save_converted  # noqa: E402
from qdeploy.quantize.torch_qat import qat  # noqa: E402


def main(ckpt, npz, out, epochs):
    import subprocess

    for part in npz.split(","):  # several packs: the training set split to fit the transfer limit
        subprocess.run([sys.executable, "bench/gpu/unpack_cifar.py", "/tmp/qatdata", f"train={part}"], check=True)
    spec = PreprocessSpec()
    # the run's 300 calibration images (PTQ's grids, QAT's start) and 1,000 held-out validation images
    calib, train, val = open_qat_sets(DataConfig(root="/tmp/qatdata"), None, 1000)
    pixels = train.pixels_uint8(spec)
    model = load_model("resnet18-cifar", ckpt)
    epochs = int(epochs)
    cfg = TORCH_PRESETS["pt-qat"]().with_(qat_epochs=epochs, qat_train_limit=None, device="cuda", qat_batch_size=128,
                                          freeze_observer_epoch=max(1, epochs - 1))
    t0 = time.time()
    qmodel, history, chosen = qat(model, pixels, train.labels, spec, cfg, calib.load(spec),
                                  val=(val.load(spec), val.labels))
    Path(out).mkdir(parents=True, exist_ok=True)
    save_converted(qmodel, Path(out) / "pt_qat_int8.pth")
    # history beside the weights, where `qdeploy run --qat-from` looks for it
    (Path(out) / "pt_qat_int8.json").write_text(json.dumps(
        {"config": cfg.as_dict(), "history": history, "qat_epoch": chosen, "images": int(len(pixels)),
         "seconds": time.time() - t0}, indent=2))
    print(f"QAT done: {epochs} epochs on {len(pixels)} images in {time.time() - t0:.0f}s")


if __name__ == "__main__":
    main(*sys.argv[1:5])
