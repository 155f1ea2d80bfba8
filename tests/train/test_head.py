"""Head training on a frozen pretrained backbone: cached features, a record `qdeploy run` reads."""
import json

import torch

from conftest import CLASSES, tiny_imagefolder
from qdeploy.models import load_model
from qdeploy.source import SourceConfig, resolve_source
from qdeploy.train.head import HeadConfig, train_head


def test_head_on_lite0_features_is_cached_and_loadable(tmp_path):
    root = tiny_imagefolder(tmp_path / "data", per_class=6, split="train")
    tiny_imagefolder(root, per_class=3, split="test")
    logs = []
    cfg = HeadConfig(epochs=5, batch_size=16, val_size=20)
    res = train_head(cfg, root, tmp_path / "out", log=logs.append)
    assert res.best.is_file() and 0 <= res.test_acc <= 1 and res.epochs_run == 5
    rec = json.loads((tmp_path / "out" / "best.json").read_text())
    assert rec["arch"] == "efficientnet-lite0" and rec["classes"] == CLASSES and rec["preprocess"]["size"] == 224
    assert rec["frozen_backbone"] and len(list((tmp_path / "out" / ".features").glob("*.npy"))) == 3
    model = load_model("efficientnet-lite0", res.best)
    assert model._fc.out_features == 10
    src = resolve_source(SourceConfig(checkpoint=str(res.best)))
    assert src.arch == "efficientnet-lite0" and src.preprocess.size == 224 and src.classes == CLASSES
    # the backbone is the pretrained one, untouched
    from qdeploy.models import pretrained

    weights, _ = pretrained("efficientnet-lite0", "imagenet")
    ref = torch.load(weights, weights_only=True)
    assert torch.equal(model.state_dict()["_conv_stem.weight"], ref["_conv_stem.weight"])
    logs.clear()
    train_head(cfg.with_(epochs=2), root, tmp_path / "out", log=logs.append)
    assert sum("from cache" in m for m in logs) == 3  # a second run re-uses every feature file
