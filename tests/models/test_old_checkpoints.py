"""Defect 7: a state_dict saved by an older PyTorch (no BatchNorm `num_batches_tracked`, no version
metadata) loads, as torch's own load_state_dict(strict=True) accepts it; real mismatches still get the
readable report."""
import pytest
import torch

from qdeploy.errors import CheckpointError
from qdeploy.models import load_model


def _old_style(ckpt, tmp_path):
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    old = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}  # a plain dict: no _metadata
    assert len(old) < len(state) and not hasattr(old, "_metadata")
    path = tmp_path / "old.pth"
    torch.save(old, path)
    return path, state


def test_checkpoint_without_bn_counters_loads(ckpt, tmp_path):
    path, state = _old_style(ckpt, tmp_path)
    model = load_model("resnet18-cifar", path)
    got = model.state_dict()
    assert all(torch.equal(got[k], v) for k, v in state.items() if not k.endswith("num_batches_tracked"))


def test_real_mismatch_still_reported(ckpt, tmp_path):
    path, _ = _old_style(ckpt, tmp_path)
    state = torch.load(path, weights_only=True)
    state.pop("fc.weight")
    torch.save(dict(state), tmp_path / "broken.pth")
    with pytest.raises(CheckpointError, match=r"1 missing \(fc.weight\)"):
        load_model("resnet18-cifar", tmp_path / "broken.pth")
