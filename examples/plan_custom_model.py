"""Plan fine-tuning of your own network on several microcontrollers.

A small keyword-spotting-style CNN (depthwise-separable blocks on a 1x49x10 MFCC map),
planned for every MCU profile at its default budget; the plans are written next to
``--out``. Run: python examples/plan_custom_model.py --out plans/
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import nn

import budgetplan
from budgetplan.report.text import render_plan


def ds_block(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_in, 3, stride, 1, groups=c_in, bias=False),
        nn.BatchNorm2d(c_in),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_in, c_out, 1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class KeywordNet(nn.Module):
    def __init__(self, num_classes: int = 12) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 64, (10, 4), (2, 2), (5, 1), bias=False), nn.BatchNorm2d(64), nn.ReLU())
        self.blocks = nn.Sequential(*(ds_block(64, 64, 1) for _ in range(4)))
        self.head = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(x))
        return self.head(x.mean(dim=(2, 3)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("plans"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    model = KeywordNet()
    example = torch.zeros(1, 1, 49, 10)
    for device in ("cortex-m4", "nrf52840", "rp2040", "cortex-m7"):
        try:
            plan = budgetplan.solve(model, example, device, model_name="KeywordNet")
        except budgetplan.InfeasibleError as err:
            print(f"{device}: {err}\n")
            continue
        path = args.out / f"{device}.yaml"
        plan.save(path)
        print(render_plan(plan))
        print(f"-> {path}\n")


if __name__ == "__main__":
    main()
