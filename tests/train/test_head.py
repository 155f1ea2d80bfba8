"""Fine-tuning on a frozen pretrained trunk: cached trunk outputs, a trained tail, a record `qdeploy run` reads."""
import json

import numpy as np
import pytest
import torch

from conftest import CLASSES, tiny_imagefolder
from qdeploy.data import open_split
from qdeploy.errors import ConfigError
from qdeploy.models import load_model, pretrained
from qdeploy.source import SourceConfig, resolve_source
from qdeploy.train.head import HeadConfig, train_head


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tiny_imagefolder(tmp_path_factory.mktemp("data"), per_class=6, split="train")
    return tiny_imagefolder(root, per_class=3, split="test")


def test_last_block_tune_is_cached_loadable_and_matches_the_full_model(tmp_path, root):
    logs = []
    cfg = HeadConfig(epochs=2, batch_size=16, val_size=20)
    assert cfg.tune == "last-block" and cfg.lr == 1e-3
    res = train_head(cfg, root, tmp_path / "out", log=logs.append)
    assert res.best.is_file() and 0 <= res.test_acc <= 1 and res.epochs_run == 2
    rec = json.loads((tmp_path / "out" / "best.json").read_text())
    assert rec["arch"] == "efficientnet-lite0" and rec["classes"] == CLASSES and rec["preprocess"]["size"] == 224
    assert rec["frozen_backbone"] and rec["trained_from"] == "_blocks.15"
    cached = sorted((tmp_path / "out" / ".features").glob("*.npy"))
    assert len(cached) == 3 and np.load(cached[0], mmap_mode="r").shape[1:] == (192, 7, 7)
    model = load_model("efficientnet-lite0", res.best).eval()
    assert model._fc.out_features == 10
    src = resolve_source(SourceConfig(checkpoint=str(res.best)))
    assert src.arch == "efficientnet-lite0" and src.preprocess.size == 224 and src.classes == CLASSES
    # the trunk is the pretrained one, untouched; the last block trained
    weights, spec = pretrained("efficientnet-lite0", "imagenet")
    ref = torch.load(weights, weights_only=True)
    sd = model.state_dict()
    assert torch.equal(sd["_blocks.14._project_conv.weight"], ref["_blocks.14._project_conv.weight"])
    assert not torch.equal(sd["_blocks.15._project_conv.weight"], ref["_blocks.15._project_conv.weight"])
    # the accuracy measured on cached maps is the saved model's, run end to end on the images themselves
    test = open_split(root, "test", CLASSES)
    with torch.no_grad():
        pred = model(torch.from_numpy(test.load(spec))).argmax(1).numpy()
    assert abs(float((pred == test.labels).mean()) - res.test_acc) < 1e-9
    logs.clear()
    train_head(cfg.with_(epochs=1), root, tmp_path / "out", log=logs.append)
    assert sum("from cache" in m for m in logs) == 3  # a second run re-uses every feature file


def test_linear_probe_caches_pooled_features_apart(tmp_path, root):
    res = train_head(HeadConfig(tune="fc", epochs=2, batch_size=16, val_size=20), root, tmp_path / "out", log=lambda m: None)
    cached = list((tmp_path / "out" / ".features").glob("*.npy"))
    assert res.epochs_run == 2 and np.load(cached[0], mmap_mode="r").shape[1:] == (1280,)
    with pytest.raises(ConfigError, match="tune"):
        HeadConfig(tune="everything")
