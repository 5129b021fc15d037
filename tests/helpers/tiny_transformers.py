"""A small vision transformer and a small causal language model, and their saved bytes
measured two ways (stock autograd with every plannable layer trained, the lean backward
under a selection), shared by the cost-model and training tests."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchvision.models import VisionTransformer

from budgetplan import SavedTensorMeter
from budgetplan.costs.layers import plannable_layers
from budgetplan.training.lean import LeanAutograd


def small_vit() -> tuple[nn.Module, Tensor]:
    torch.manual_seed(0)
    model = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32)
    model.heads = nn.Sequential(nn.Linear(16, 5))
    return model, torch.randn(2, 3, 32, 32)


class SmallLM(nn.Module):
    """Token embedding, two pre-norm ``TransformerEncoder`` layers under a causal mask, a head."""

    def __init__(self, vocab: int = 50, width: int = 16, layers: int = 2) -> None:
        super().__init__()
        self.tokens = nn.Embedding(vocab, width)
        block = nn.TransformerEncoderLayer(
            width, 2, 2 * width, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(block, layers, enable_nested_tensor=False)
        self.head = nn.Linear(width, vocab)

    def forward(self, tokens: Tensor) -> Tensor:
        mask = nn.Transformer.generate_square_subsequent_mask(tokens.shape[1])
        return self.head(self.encoder(self.tokens(tokens), mask=mask, is_causal=True))


def small_lm() -> tuple[nn.Module, Tensor]:
    torch.manual_seed(0)
    return SmallLM(), torch.randint(0, 50, (2, 12))


def stock_saved_bytes(model: nn.Module, x: Tensor) -> int:
    """Bytes autograd keeps with every plannable layer's weight and bias trainable."""
    model.train()
    model.requires_grad_(False)
    for layer in plannable_layers(model).values():
        for param in (layer.weight, layer.bias):
            if param is not None:
                param.requires_grad_(True)
    with SavedTensorMeter(model) as meter:
        model(x)
    return meter.bytes


def lean_saved_bytes(model: nn.Module, x: Tensor, selection: dict[str, Tensor]) -> int:
    """Bytes the lean backward keeps training ``selection`` (weights only)."""
    model.train()
    model.requires_grad_(False)
    layers = plannable_layers(model)
    for name in selection:
        layers[name].weight.requires_grad_(True)
    with SavedTensorMeter(model) as meter, LeanAutograd(model, selection):
        model(x)
    return meter.bytes
