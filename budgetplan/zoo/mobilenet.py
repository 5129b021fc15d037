"""MobileNetV2 (Sandler et al. 2018) built without importing torchvision.

The command line's default network. torchvision's package import also loads
``torch._dynamo`` (about 2 s on two cores), more than the whole plan takes; this builder
makes the same network with the same module names, so torchvision's checkpoints load into
it, plans made for one match the other layer for layer, and the same weights give the same
output.

>>> import torch, torchvision
>>> ours = mobilenet_v2(num_classes=10, width_mult=0.35)
>>> theirs = torchvision.models.mobilenet_v2(num_classes=10, width_mult=0.35)
>>> [n for n, _ in ours.named_modules()] == [n for n, _ in theirs.named_modules()]
True
>>> _ = theirs.load_state_dict(ours.state_dict())
>>> x = torch.randn(2, 3, 64, 64)
>>> torch.equal(ours.eval()(x), theirs.eval()(x))
True
"""

from __future__ import annotations

import torch
from torch import nn

# expansion t, output channels c, repeats n, first stride s (the paper's Table 2)
STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


def _divisible(value: float, divisor: int = 8) -> int:
    """Round to a multiple of ``divisor``, never below 90% of ``value`` (torchvision's rule)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def _conv_bn_relu6(inp: int, out: int, kernel: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(inp, out, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out),
        nn.ReLU6(inplace=True),
    )


class InvertedResidual(nn.Module):
    """Expand (1×1), depthwise 3×3, project (1×1); the input is added back where shapes allow."""

    def __init__(self, inp: int, out: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = inp * expand
        self.use_res_connect = stride == 1 and inp == out
        layers: list[nn.Module] = [_conv_bn_relu6(inp, hidden, kernel=1)] if expand != 1 else []
        layers += [
            _conv_bn_relu6(hidden, hidden, stride=stride, groups=hidden),
            nn.Conv2d(hidden, out, 1, 1, 0, bias=False),
            nn.BatchNorm2d(out),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
    """torchvision's ``MobileNetV2`` layout: ``features`` (stem, 17 blocks, 1×1 head) and
    ``classifier`` (dropout, linear)."""

    def __init__(self, num_classes: int = 1000, width_mult: float = 1.0, dropout: float = 0.2) -> None:
        super().__init__()
        channels = _divisible(32 * width_mult)
        last = _divisible(1280 * max(1.0, width_mult))
        features: list[nn.Module] = [_conv_bn_relu6(3, channels, stride=2)]
        for t, c, n, s in STAGES:
            out = _divisible(c * width_mult)
            for i in range(n):
                features.append(InvertedResidual(channels, out, s if i == 0 else 1, t))
                channels = out
        features.append(_conv_bn_relu6(channels, last, kernel=1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(p=dropout), nn.Linear(last, num_classes))
        if self.classifier[1].weight.is_meta:
            return  # nothing to fill; random fills of meta tensors would import torch._dynamo
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.adaptive_avg_pool2d(self.features(x), 1)
        return self.classifier(torch.flatten(x, 1))


def mobilenet_v2(num_classes: int = 1000, width_mult: float = 1.0, dropout: float = 0.2) -> MobileNetV2:
    """MobileNetV2 with random weights, as ``torchvision.models.mobilenet_v2(weights=None)``."""
    return MobileNetV2(num_classes, width_mult, dropout)
