"""How much frozen BatchNorm scales the SGD steps of the convs before it, in ImageNet MobileNetV2.

Run: python benchmarks/norm_gain.py

For each conv followed by a BatchNorm, the factor ``(gamma / sqrt(running_var + eps))**2``
per output channel (see ``budgetplan.training.fold``), summarised by conv kind: the median
over channels and the largest.
"""

from __future__ import annotations

import statistics

from torch import nn

from budgetplan.training.fold import conv_norm_pairs, step_gain
from budgetplan.zoo.pretrained import imagenet_mobilenet_v2


def kind(conv: nn.Conv2d) -> str:
    if conv.groups > 1:
        return "depthwise"
    return "1x1" if conv.kernel_size == (1, 1) else "full 3x3"


def main() -> None:
    model = imagenet_mobilenet_v2().eval()
    modules = dict(model.named_modules())
    gains: dict[str, list[float]] = {}
    for conv_name, norm_name in conv_norm_pairs(model):
        conv, norm = modules[conv_name], modules[norm_name]
        assert isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d)
        gains.setdefault(kind(conv), []).extend(step_gain(norm).tolist())
    print("| conv kind | channels | median (gamma/sigma)^2 | largest |")
    print("| --- | --- | --- | --- |")
    for name, values in gains.items():
        print(f"| {name} | {len(values)} | {statistics.median(values):.3g} | {max(values):,.1f} |")


if __name__ == "__main__":
    main()
