import pytest
import torch

from qdeploy.errors import ArchitectureError, CheckpointError
from qdeploy.models import build_model, load_checkpoint, load_model


def test_seed_module_names(ckpt):
    model = build_model("resnet18-cifar", num_classes=10)
    names = set(model.state_dict())
    for key in ("conv1.0.weight", "layer1.0.left.0.weight", "layer2.0.shortcut.0.weight", "fc.weight"):
        assert key in names
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(11.17e6, rel=0.01)
    assert names == set(load_checkpoint(ckpt))


@pytest.mark.parametrize("wrap", ["bare", "state_dict", "model", "module_prefix"])
def test_checkpoint_layouts(tmp_path, ckpt, wrap):
    sd = torch.load(ckpt, weights_only=True)
    obj = {"bare": sd, "state_dict": {"state_dict": sd, "epoch": 3}, "model": {"model": sd},
           "module_prefix": {f"module.{k}": v for k, v in sd.items()}}[wrap]
    p = tmp_path / "c.pth"
    torch.save(obj, p)
    model = load_model("resnet18-cifar", p)
    assert torch.equal(model.state_dict()["fc.weight"], sd["fc.weight"])


def test_missing_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.pth")


def test_corrupt_checkpoint(tmp_path):
    p = tmp_path / "bad.pth"
    p.write_bytes(b"this is not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_checkpoint(p)


class Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_code_pickles_are_refused(tmp_path):
    p = tmp_path / "evil.pth"
    torch.save({"w": Evil()}, p)
    with pytest.raises(CheckpointError):
        load_checkpoint(p)


def test_mismatch_lists_keys(tmp_path, ckpt):
    sd = torch.load(ckpt, weights_only=True)
    sd.pop("fc.bias")
    sd["extra.weight"] = torch.zeros(3)
    sd["layer1.0.left.0.weight"] = torch.zeros(64, 64, 1, 1)
    p = tmp_path / "c.pth"
    torch.save(sd, p)
    with pytest.raises(CheckpointError) as e:
        load_model("resnet18-cifar", p)
    msg = str(e.value)
    assert "1 missing (fc.bias)" in msg and "1 unexpected (extra.weight)" in msg and "1 mis-shaped" in msg


def test_user_architecture(tmp_path):
    f = tmp_path / "mynet.py"
    f.write_text("import torch.nn as nn\nclass Net(nn.Module):\n    def __init__(self, width=8, num_classes=10):\n"
                 "        super().__init__(); self.c = nn.Conv2d(3, width, 3); self.fc = nn.Linear(width, num_classes)\n"
                 "    def forward(self, x):\n        return self.fc(self.c(x).mean((2, 3)))\n")
    m = build_model(f"{f}:Net", arch_kwargs='{"width": 4}')
    assert m.c.out_channels == 4
    with pytest.raises(ArchitectureError, match="defines no 'Nope'"):
        build_model(f"{f}:Nope")
    with pytest.raises(ArchitectureError, match="not valid JSON"):
        build_model(f"{f}:Net", arch_kwargs="{width")
    with pytest.raises(ArchitectureError, match="unknown architecture"):
        build_model("resnet99")
