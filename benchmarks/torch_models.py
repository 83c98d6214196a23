"""deep_cnn, resnet_fer and mini_xception written in PyTorch, layer for layer as fer_keras builds
them (same trainable parameter counts), for bench_train.py's reference column."""

import torch
from torch import nn


def conv_bn_relu(cin, cout, kernel=3, stride=1, padding=1, relu=True):
    layers = [nn.Conv2d(cin, cout, kernel, stride, padding, bias=False), nn.BatchNorm2d(cout, eps=1e-3, momentum=0.01)]
    return layers + [nn.ReLU(inplace=True)] if relu else layers


def deep_cnn(widths=(32, 64, 128, 256), dropout=0.5):
    layers, cin = [], 1
    for width in widths:
        layers += conv_bn_relu(cin, width) + conv_bn_relu(width, width) + [nn.MaxPool2d(2)]
        cin = width
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(cin, 7))


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.body = nn.Sequential(*conv_bn_relu(cin, cout, stride=stride), *conv_bn_relu(cout, cout, relu=False))
        self.shortcut = (nn.Sequential(*conv_bn_relu(cin, cout, 1, stride, 0, relu=False))
                         if stride != 1 or cin != cout else nn.Identity())

    def forward(self, x):
        return torch.relu(self.body(x) + self.shortcut(x))


def resnet_fer(widths=(32, 64, 128), depth=2):
    layers, cin = conv_bn_relu(1, widths[0]), widths[0]
    for s, width in enumerate(widths):
        for b in range(depth):
            layers.append(BasicBlock(cin, width, 2 if s and not b else 1))
            cin = width
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, 7))


class XceptionModule(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()

        def sep(a, b):
            return [nn.Conv2d(a, a, 3, padding=1, groups=a, bias=False), nn.Conv2d(a, b, 1, bias=False),
                    nn.BatchNorm2d(b, eps=1e-3, momentum=0.01)]

        self.body = nn.Sequential(*sep(cin, cout), nn.ReLU(inplace=True), *sep(cout, cout), nn.MaxPool2d(3, 2, 1))
        self.shortcut = nn.Sequential(*conv_bn_relu(cin, cout, 1, 2, 0, relu=False))

    def forward(self, x):
        return self.body(x) + self.shortcut(x)


def mini_xception(stem_width=8, widths=(16, 32, 64, 128)):
    layers = conv_bn_relu(1, stem_width, padding=0) + conv_bn_relu(stem_width, stem_width, padding=0)
    cin = stem_width
    for width in widths:
        layers.append(XceptionModule(cin, width))
        cin = width
    return nn.Sequential(*layers, nn.Conv2d(cin, 7, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten())


MODELS = {"deep_cnn": deep_cnn, "resnet_fer": resnet_fer, "mini_xception": mini_xception}
