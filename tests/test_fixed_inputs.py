"""--fixed-input parsing against a model's inputs: one clear error per mistake."""
from __future__ import annotations

import numpy as np
import pytest

from qdeploy.errors import ConfigError
from qdeploy.fixed_inputs import arrays, describe, parse

INPUTS = {"image": ([1, 3, "h", "w"], "tensor(float)"), "style_weights": ([26], "tensor(float)")}


def test_onehot_values_and_npy(tmp_path):
    f = parse(["style_weights=onehot:19"], INPUTS, "image")
    a = arrays(f)["style_weights"]
    assert a.shape == (26,) and a.dtype == np.float32 and a[19] == 1 and a.sum() == 1
    blend = np.full(26, 1 / 26, np.float32)
    np.save(tmp_path / "w.npy", blend)
    assert np.allclose(arrays(parse([f"style_weights={tmp_path / 'w.npy'}"], INPUTS, "image"))["style_weights"], blend)
    vals = ",".join(["0"] * 25 + ["1"])
    assert arrays(parse([f"style_weights={vals}"], INPUTS, "image"))["style_weights"][25] == 1
    assert describe(f) == "style_weights=onehot:19"


@pytest.mark.parametrize("spec,msg", [
    (["style_weights=onehot:26"], "index must be 0..25"),
    (["style=onehot:1"], "not an input of the model"),
    (["style_weights"], "NAME=VALUE"),
    (["style_weights=1,2,3"], "3 values"),
    (["image=onehot:1"], "image input"),
    ([], "need values: style_weights"),
    (["style_weights=abc"], "not onehot:K"),
])
def test_errors(spec, msg):
    with pytest.raises(ConfigError, match=msg):
        parse(spec, INPUTS, "image")


def test_pickled_npy_is_refused(tmp_path):
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ConfigError, match="cannot read"):
        parse([f"style_weights={tmp_path / 'obj.npy'}"], INPUTS, "image")
