"""Predicted against measured saved-for-backward memory of transformers (docs/cost-model.md).

For torchvision's vit_b_16, swin_t and convnext_tiny at 224x224 and a 6-layer
``nn.TransformerEncoder`` language model (token embedding, causal mask), one training
forward at batch 1 on the CPU, in train mode:

* ``dense``: every parameter trainable, stock autograd; predicted as every plannable
  layer training all its input channels and its bias;
* ``full``: the same prediction, measured with only the plannable layers' weights and
  biases trainable (stock autograd), the most a plan can train: a planner keeps norms,
  layer scales and embeddings frozen, and a frozen layer scale saves nothing;
* ``planned``: a plan solved for the Raspberry Pi 4 under a training-memory cap of a
  quarter of dense, run by the lean backward with a random selection of the planned
  channels (what ``BudgetPlanCallback`` does).

Measured is what ``SavedTensorMeter`` counts (parameters excluded), predicted the plan's
saved tensors on the device profile (fp32 activations, as on the host). Prints a markdown
table.

    OMP_NUM_THREADS=1 python benchmarks/transformer_memory.py [--models vit_b_16 lm]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch
import torchvision
from torch import Tensor, nn

from budgetplan import SavedTensorMeter, solve
from budgetplan.costs.build import layer_costs
from budgetplan.costs.layers import plannable_layers
from budgetplan.device.profile import load_device
from budgetplan.planning.memory import Choice, predict
from budgetplan.training.lean import LeanAutograd

DEVICE = "raspberry-pi-4"


class CausalLM(nn.Module):
    """A decoder-only language model built from ``nn.TransformerEncoder``: token and
    position embeddings, pre-norm layers under a causal mask, a tied-free output head."""

    def __init__(
        self, vocab: int = 8000, width: int = 256, heads: int = 4, layers: int = 6, context: int = 256
    ) -> None:
        super().__init__()
        self.tokens = nn.Embedding(vocab, width)
        self.positions = nn.Embedding(context, width)
        block = nn.TransformerEncoderLayer(
            width, heads, 4 * width, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(block, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab)

    def forward(self, tokens: Tensor) -> Tensor:
        length = tokens.shape[1]
        x = self.tokens(tokens) + self.positions(torch.arange(length, device=tokens.device))
        mask = nn.Transformer.generate_square_subsequent_mask(length, device=tokens.device)
        return self.head(self.norm(self.encoder(x, mask=mask, is_causal=True)))


def _image(name: str) -> tuple[nn.Module, Tensor]:
    return getattr(torchvision.models, name)(), torch.randn(1, 3, 224, 224)


MODELS: dict[str, Callable[[], tuple[nn.Module, Tensor]]] = {
    "vit_b_16": lambda: _image("vit_b_16"),
    "swin_t": lambda: _image("swin_t"),
    "convnext_tiny": lambda: _image("convnext_tiny"),
    "lm": lambda: (CausalLM(), torch.randint(0, 8000, (1, 256))),
}


def measure_stock(model: nn.Module, x: Tensor, everything: bool) -> int:
    """Saved bytes of one stock forward with every parameter, or every plannable layer's
    weight and bias, trainable."""
    model.train()
    model.requires_grad_(everything)
    for layer in plannable_layers(model).values():
        for param in (layer.weight, layer.bias):
            if param is not None:
                param.requires_grad_(True)
    with SavedTensorMeter(model) as meter:
        model(x)
    return meter.bytes


def measure_planned(model: nn.Module, x: Tensor, channels: dict[str, int], biases: set[str]) -> int:
    """Saved bytes of one lean forward with ``channels[layer]`` random input channels."""
    model.train()
    model.requires_grad_(False)
    params = dict(model.named_parameters())
    layers = plannable_layers(model)
    generator = torch.Generator().manual_seed(0)
    selection = {}
    for name, count in channels.items():
        layers[name].weight.requires_grad_(True)
        perm = torch.randperm(layers[name].in_channels, generator=generator)
        selection[name] = perm[:count].sort().values
    for bias in biases:
        params[bias].requires_grad_(True)
    with SavedTensorMeter(model) as meter, LeanAutograd(model, selection):
        model(x)
    return meter.bytes


def rows(name: str) -> list[tuple[str, str, float, float]]:
    model, x = MODELS[name]()
    device = load_device(DEVICE)
    costs = layer_costs(model, x, device, model_name=name)
    dense = {layer.name: Choice(layer.in_channels, layer.bias_elements > 0) for layer in costs.layers}
    dense_predicted = predict(costs, device, dense).saved_bytes
    found = [
        (name, "dense", dense_predicted, float(measure_stock(model, x, everything=True))),
        (name, "full", dense_predicted, float(measure_stock(model, x, everything=False))),
    ]
    cap = predict(costs, device, dense).training_memory_bytes / 4
    plan = solve(model, x, device, model_name=name, training_memory=int(cap), time_limit=60)
    channels = {layer.name: layer.channels for layer in plan.layers if layer.channels}
    biases = {layer.bias_param for layer in plan.layers if layer.bias and layer.bias_param}
    planned = {layer.name: Choice(layer.channels, layer.bias) for layer in plan.layers}
    found.append(
        (name, "planned", predict(costs, device, planned).saved_bytes, measure_planned(model, x, channels, biases))
    )
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    args = parser.parse_args()
    torch.manual_seed(0)
    print("| model | mode | predicted bytes/sample | measured bytes/sample | error % |")
    print("| --- | --- | ---: | ---: | ---: |")
    for name in args.models:
        for model, mode, predicted, measured in rows(name):
            error = 100 * (predicted - measured) / measured
            print(f"| {model} | {mode} | {predicted:,.0f} | {measured:,.0f} | {error:+.1f} |", flush=True)


if __name__ == "__main__":
    main()
