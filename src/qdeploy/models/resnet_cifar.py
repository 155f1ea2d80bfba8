"""CIFAR ResNets with the seed's module names (seed 001's resnet18.py, generalised in width/depth).

Module names are part of the checkpoint format: `conv1`, `layerN.M.left`, `layerN.M.shortcut`, `fc`.
`resnet18-cifar` is exactly the seed's network; ResNet-20/56 (He et al. 2016, 3 stages of 16/32/64
channels) reuse the same block, with 1x1-conv projection shortcuts, so that one fusion rule and one
quantizable form serve all of them.
"""
import torch.nn as nn
import torch.nn.functional as F


class ResBlock(nn.Module):
    def __init__(self, inchannel: int, outchannel: int, stride: int = 1):
        super().__init__()
        self.left = nn.Sequential(
            nn.Conv2d(inchannel, outchannel, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(outchannel),
            nn.ReLU(inplace=True),
            nn.Conv2d(outchannel, outchannel, 3, stride=1, padding=1, bias=False),
            nn.BatchNorm2d(outchannel),
        )
        self.shortcut = nn.Sequential()
        if stride != 1 or inchannel != outchannel:
            self.shortcut = nn.Sequential(
                nn.Conv2d(inchannel, outchannel, 1, stride=stride, bias=False),
                nn.BatchNorm2d(outchannel),
            )

    def forward(self, x):
        return F.relu(self.left(x) + self.shortcut(x))


class ResNet(nn.Module):
    def __init__(self, block=ResBlock, num_classes: int = 10, widths=(64, 128, 256, 512), blocks=(2, 2, 2, 2)):
        super().__init__()
        self.widths, self.blocks = tuple(widths), tuple(blocks)
        self.inchannel = widths[0]
        self.conv1 = nn.Sequential(
            nn.Conv2d(3, widths[0], 3, stride=1, padding=1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU()
        )
        self.stages = len(widths)
        for i, (w, n) in enumerate(zip(widths, blocks)):
            setattr(self, f"layer{i + 1}", self.make_layer(block, w, n, stride=1 if i == 0 else 2))
        self.fc = nn.Linear(widths[-1], num_classes)

    def make_layer(self, block, channels, num_blocks, stride):
        layers = []
        for s in [stride] + [1] * (num_blocks - 1):
            layers.append(block(self.inchannel, channels, s))
            self.inchannel = channels
        return nn.Sequential(*layers)

    def features(self, x):
        out = self.conv1(x)
        for i in range(self.stages):
            out = getattr(self, f"layer{i + 1}")(out)
        # Global average pooling: equals the seed's avg_pool2d(out, 4) at 32x32 and keeps
        # the graph valid for other input sizes.
        return F.adaptive_avg_pool2d(out, 1).flatten(1)

    def forward(self, x):
        return self.fc(self.features(x))


def resnet18_cifar(num_classes: int = 10) -> ResNet:
    return ResNet(ResBlock, num_classes=num_classes)


def resnet20_cifar(num_classes: int = 10) -> ResNet:
    return ResNet(ResBlock, num_classes=num_classes, widths=(16, 32, 64), blocks=(3, 3, 3))


def resnet56_cifar(num_classes: int = 10) -> ResNet:
    return ResNet(ResBlock, num_classes=num_classes, widths=(16, 32, 64), blocks=(9, 9, 9))
