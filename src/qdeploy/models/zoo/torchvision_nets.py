"""torchvision's ResNet-50 (torchvision/models/resnet.py), MobileNetV3 (mobilenetv3.py), EfficientNet-B0
(efficientnet.py) and RegNet (regnet.py), with their module names so that their state_dicts load strictly.
Stochastic depth and dropout are identity at inference and have no parameters; they are left out."""
from __future__ import annotations

import math
from collections import OrderedDict
from functools import partial

import torch
import torch.nn as nn

from .layers import ConvNormAct, SqueezeExcitation, make_divisible


class Bottleneck(nn.Module):
    """resnet.py Bottleneck (ResNet v1.5: the stride sits on the 3x3 convolution)."""
    expansion = 4

    def __init__(self, cin: int, width: int, stride: int = 1):
        super().__init__()
        cout = width * self.expansion
        self.conv1, self.bn1 = nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width)
        self.conv2, self.bn2 = nn.Conv2d(width, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width)
        self.conv3, self.bn3 = nn.Conv2d(width, cout, 1, bias=False), nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                           if stride != 1 or cin != cout else None)

    def forward(self, x):
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return self.relu(y + (self.downsample(x) if self.downsample is not None else x))


class ResNet(nn.Module):
    """resnet.py ResNet with Bottleneck blocks: conv1, bn1, maxpool, layer1..layer4, fc."""

    def __init__(self, layers=(3, 4, 6, 3), num_classes: int = 1000):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1, self.relu = nn.BatchNorm2d(64), nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin = 64
        for i, (n, width) in enumerate(zip(layers, (64, 128, 256, 512))):
            blocks = []
            for j in range(n):
                blocks.append(Bottleneck(cin, width, 2 if j == 0 and i > 0 else 1))
                cin = width * Bottleneck.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet50(num_classes: int = 1000) -> ResNet:
    return ResNet((3, 4, 6, 3), num_classes)


# -- MobileNetV3: (input, kernel, expanded, output, squeeze-excite, hardswish, stride) per block
MNV3_SMALL = ((16, 3, 16, 16, True, False, 2), (16, 3, 72, 24, False, False, 2), (24, 3, 88, 24, False, False, 1),
              (24, 5, 96, 40, True, True, 2), (40, 5, 240, 40, True, True, 1), (40, 5, 240, 40, True, True, 1),
              (40, 5, 120, 48, True, True, 1), (48, 5, 144, 48, True, True, 1), (48, 5, 288, 96, True, True, 2),
              (96, 5, 576, 96, True, True, 1), (96, 5, 576, 96, True, True, 1))
MNV3_LARGE = ((16, 3, 16, 16, False, False, 1), (16, 3, 64, 24, False, False, 2), (24, 3, 72, 24, False, False, 1),
              (24, 5, 72, 40, True, False, 2), (40, 5, 120, 40, True, False, 1), (40, 5, 120, 40, True, False, 1),
              (40, 3, 240, 80, False, True, 2), (80, 3, 200, 80, False, True, 1), (80, 3, 184, 80, False, True, 1),
              (80, 3, 184, 80, False, True, 1), (80, 3, 480, 112, True, True, 1), (112, 3, 672, 112, True, True, 1),
              (112, 5, 672, 160, True, True, 2), (160, 5, 960, 160, True, True, 1), (160, 5, 960, 160, True, True, 1))
MNV3_BN = partial(nn.BatchNorm2d, eps=0.001, momentum=0.01)


class InvertedResidualV3(nn.Module):
    """mobilenetv3.py InvertedResidual: `block` = [expand], depthwise, [SE with hardsigmoid], project."""

    def __init__(self, cin, kernel, mid, cout, se, hs, stride):
        super().__init__()
        act = nn.Hardswish if hs else nn.ReLU
        layers = [ConvNormAct(cin, mid, 1, norm=MNV3_BN, act=act)] if mid != cin else []
        layers.append(ConvNormAct(mid, mid, kernel, stride, groups=mid, norm=MNV3_BN, act=act))
        if se:
            layers.append(SqueezeExcitation(mid, make_divisible(mid // 4, 8), scale_act=nn.Hardsigmoid))
        layers.append(ConvNormAct(mid, cout, 1, norm=MNV3_BN, act=None))
        self.block = nn.Sequential(*layers)
        self.use_res_connect = stride == 1 and cin == cout

    def forward(self, x):
        y = self.block(x)
        return y + x if self.use_res_connect else y


class MobileNetV3(nn.Module):
    """mobilenetv3.py MobileNetV3: features (stem, blocks, last 1x1), avgpool, classifier (Linear, Hardswish,
    Dropout, Linear)."""

    def __init__(self, setting, last_channel: int, num_classes: int = 1000):
        super().__init__()
        layers = [ConvNormAct(3, setting[0][0], 3, 2, norm=MNV3_BN, act=nn.Hardswish)]
        layers += [InvertedResidualV3(*s) for s in setting]
        last_in = setting[-1][3]
        layers.append(ConvNormAct(last_in, 6 * last_in, 1, norm=MNV3_BN, act=nn.Hardswish))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Linear(6 * last_in, last_channel), nn.Hardswish(), nn.Dropout(0.2),
                                        nn.Linear(last_channel, num_classes))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def mobilenet_v3_small(num_classes: int = 1000) -> MobileNetV3:
    return MobileNetV3(MNV3_SMALL, 1024, num_classes)


def mobilenet_v3_large(num_classes: int = 1000) -> MobileNetV3:
    return MobileNetV3(MNV3_LARGE, 1280, num_classes)


# -- EfficientNet-B0: (expand, kernel, stride, input, output, repeats) per stage, Table 1 of the paper
EFFNET_B0 = ((1, 3, 1, 32, 16, 1), (6, 3, 2, 16, 24, 2), (6, 5, 2, 24, 40, 2), (6, 3, 2, 40, 80, 3),
             (6, 5, 1, 80, 112, 3), (6, 5, 2, 112, 192, 4), (6, 3, 1, 192, 320, 1))


class MBConv(nn.Module):
    """efficientnet.py MBConv: `block` = [expand], depthwise, SE (SiLU, sigmoid; squeeze = input / 4), project."""

    def __init__(self, expand, kernel, stride, cin, cout):
        super().__init__()
        mid = make_divisible(cin * expand, 8)
        layers = [ConvNormAct(cin, mid, 1, act=nn.SiLU)] if mid != cin else []
        layers += [ConvNormAct(mid, mid, kernel, stride, groups=mid, act=nn.SiLU),
                   SqueezeExcitation(mid, max(1, cin // 4), act=nn.SiLU),
                   ConvNormAct(mid, cout, 1, act=None)]
        self.block = nn.Sequential(*layers)
        self.use_res_connect = stride == 1 and cin == cout

    def forward(self, x):
        y = self.block(x)
        return y + x if self.use_res_connect else y


class EfficientNet(nn.Module):
    """efficientnet.py EfficientNet: features (stem, one Sequential per stage, head 1x1), avgpool, classifier
    (Dropout, Linear)."""

    def __init__(self, stages=EFFNET_B0, num_classes: int = 1000, dropout: float = 0.2):
        super().__init__()
        layers = [ConvNormAct(3, stages[0][3], 3, 2, act=nn.SiLU)]
        for expand, kernel, stride, cin, cout, n in stages:
            layers.append(nn.Sequential(*[MBConv(expand, kernel, stride if i == 0 else 1, cin if i == 0 else cout,
                                                 cout) for i in range(n)]))
        last = 4 * stages[-1][4]
        layers.append(ConvNormAct(stages[-1][4], last, 1, act=nn.SiLU))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(last, num_classes))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def efficientnet_b0(num_classes: int = 1000) -> EfficientNet:
    return EfficientNet(EFFNET_B0, num_classes)


# -- RegNet (regnet.py): stem, trunk_output.blockS.blockS-I (proj, f.a / f.b / f.se / f.c), fc
def regnet_stages(depth: int, w_0: int, w_a: float, w_m: float, group_width: int) -> list[tuple[int, int, int]]:
    """BlockParams.from_init_params: (width, depth, group width) per stage, widths quantized to 8 in log space
    and made compatible with the group width (bottleneck multiplier 1)."""
    widths_cont = torch.arange(depth) * w_a + w_0
    capacity = torch.round(torch.log(widths_cont / w_0) / math.log(w_m))
    block_w = (torch.round(torch.divide(w_0 * torch.pow(w_m, capacity), 8)) * 8).int().tolist()
    stages: list[list[int]] = []
    for w in block_w:
        if stages and stages[-1][0] == w:
            stages[-1][1] += 1
        else:
            stages.append([w, 1])
    out = []
    for w, d in stages:
        g = min(group_width, w)
        out.append((make_divisible(w, g), d, g))
    return out


class ResBottleneckBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, group_width: int, se_ratio: float | None):
        super().__init__()
        self.proj = ConvNormAct(cin, cout, 1, stride, act=None) if cin != cout or stride != 1 else None
        f = OrderedDict(a=ConvNormAct(cin, cout, 1), b=ConvNormAct(cout, cout, 3, stride, groups=cout // group_width))
        if se_ratio:
            f["se"] = SqueezeExcitation(cout, int(round(se_ratio * cin)))
        f["c"] = ConvNormAct(cout, cout, 1, act=None)
        self.f = nn.Sequential(f)
        self.activation = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.activation((self.proj(x) if self.proj is not None else x) + self.f(x))


class RegNet(nn.Module):
    def __init__(self, stages: list[tuple[int, int, int]], se_ratio: float | None, num_classes: int = 1000,
                 stem_width: int = 32):
        super().__init__()
        self.stem = ConvNormAct(3, stem_width, 3, 2)
        trunk, cin = OrderedDict(), stem_width
        for s, (w, d, g) in enumerate(stages, start=1):
            trunk[f"block{s}"] = nn.Sequential(OrderedDict(
                (f"block{s}-{i}", ResBottleneckBlock(cin if i == 0 else w, w, 2 if i == 0 else 1, g, se_ratio))
                for i in range(d)))
            cin = w
        self.trunk_output = nn.Sequential(trunk)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.avgpool(self.trunk_output(self.stem(x))), 1))


def regnet_y_400mf(num_classes: int = 1000) -> RegNet:
    return RegNet(regnet_stages(16, 48, 27.89, 2.09, 8), 0.25, num_classes)


def regnet_x_400mf(num_classes: int = 1000) -> RegNet:
    return RegNet(regnet_stages(22, 24, 24.48, 2.54, 16), None, num_classes)


TORCHVISION_ARCHITECTURES = {
    "resnet50": resnet50,
    "mobilenet_v3_small": mobilenet_v3_small,
    "mobilenet_v3_large": mobilenet_v3_large,
    "efficientnet_b0": efficientnet_b0,
    "regnet_y_400mf": regnet_y_400mf,
    "regnet_x_400mf": regnet_x_400mf,
}
