"""The model that ships inside the package, so `qdeploy serve` works anywhere with no data.

bundled/resnet20_cifar10/ holds a ResNet-20 trained by `qdeploy train` on a GPU and the output of
`qdeploy run` on it (FP32 + INT8 ONNX, report), plus its training record (best.json, history.json).
"""
from __future__ import annotations

from pathlib import Path

from ..errors import ModelFileError

BUNDLED = Path(__file__).parent / "resnet20_cifar10"


def bundled_run_dir() -> Path:
    if not (BUNDLED / "report.json").is_file():
        raise ModelFileError(f"the bundled model is missing from {BUNDLED}; reinstall qdeploy or pass a run directory")
    return BUNDLED
