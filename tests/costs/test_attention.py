"""Attention in the cost model: the packed projection is a layer, and what the attention,
norms and activations keep is what autograd keeps (docs/cost-model.md, "Attention")."""

import pytest
import torch
from torch import nn

from budgetplan import layer_costs, load_device
from budgetplan.planning.memory import Choice, predict

from ..helpers.tiny_transformers import lean_saved_bytes, small_lm, small_vit, stock_saved_bytes

MODELS = {"vit": small_vit, "lm": small_lm}
BLOCKS = {"vit": "encoder.layers.encoder_layer_{}.self_attention", "lm": "encoder.layers.{}.self_attn"}
TOKENS = {"vit": 4 * 4 + 1, "lm": 12}  # 8x8 patches of 32x32 and the class token; the tokens
HOST = load_device("raspberry-pi-4")  # fp32 activations, as the host keeps them


@pytest.mark.parametrize("kind", MODELS)
def test_in_projection_is_a_layer_over_the_embedding(kind):
    model, x = MODELS[kind]()
    costs = layer_costs(model, x)
    for block in range(2):
        attention = BLOCKS[kind].format(block)
        layer = costs.layer(f"{attention}.in_proj")
        assert (layer.kind, layer.in_channels, layer.out_channels) == ("linear", 16, 48)
        assert layer.bias_param == f"{attention}.in_proj_bias"
        # one position per token, whatever the layout attention runs in ((L, N, E) here)
        assert layer.activation_elements_per_channel == TOKENS[kind]
        assert costs.layer(f"{attention}.out_proj").activation_elements_per_channel == 0  # reads attention's output
    assert not costs.unknown_ops
    assert all("attention" not in u.name and "self_attn" not in u.name for u in costs.uncosted)


def test_fast_path_is_left_as_found():
    model, x = small_lm()
    before = torch.backends.mha.get_fastpath_enabled()
    layer_costs(model, x)
    assert torch.backends.mha.get_fastpath_enabled() == before


@pytest.mark.parametrize("kind", MODELS)
def test_every_layer_trained_saves_what_is_predicted(kind):
    model, x = MODELS[kind]()
    costs = layer_costs(model, x[:1])
    choices = {layer.name: Choice(layer.in_channels, layer.bias_elements > 0) for layer in costs.layers}
    predicted = predict(costs, HOST, choices, batch_size=x.shape[0]).saved_bytes
    measured = stock_saved_bytes(model, x)
    assert measured == pytest.approx(predicted, rel=0.05)


@pytest.mark.parametrize("kind", MODELS)
@pytest.mark.parametrize("share", [0.25, 0.5])
def test_a_partial_selection_saves_what_is_predicted(kind, share):
    """From the second block on, a share of every layer's input channels; the first
    block's out_proj alone, so that the path starts at a layer reading attention's output."""
    model, x = MODELS[kind]()
    costs = layer_costs(model, x[:1])
    first = BLOCKS[kind].format(0) + ".out_proj"
    later = [layer for layer in costs.layers if layer.index > costs.layer(first).index]
    counts = {first: 3} | {layer.name: max(1, int(share * layer.in_channels)) for layer in later}
    generator = torch.Generator().manual_seed(1)
    selection = {
        name: torch.randperm(costs.layer(name).in_channels, generator=generator)[:count].sort().values
        for name, count in counts.items()
    }
    choices = {name: Choice(count) for name, count in counts.items()}
    predicted = predict(costs, HOST, choices, batch_size=x.shape[0]).saved_bytes
    measured = lean_saved_bytes(model, x, selection)
    assert measured == pytest.approx(predicted, rel=0.05)


def test_layer_norm_and_attention_statistics_are_counted():
    """A block of one attention and a norm keeps, besides activations, the norm's mean and
    inverse deviation per row and the fused attention's log-sum-exp per head and query."""
    attention = nn.MultiheadAttention(8, 2, batch_first=True)
    norm = nn.LayerNorm(8)

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attention, self.norm = attention, norm

        def forward(self, x):
            return self.norm(self.attention(x, x, x, need_weights=False)[0])

    x = torch.randn(1, 5, 8)
    costs = layer_costs(Block(), x)
    in_proj, out_proj = costs.layers
    # fused attention: q, k, v (one packed storage of 3 x 5 x 8) and the log-sum-exp (2 heads x 5)
    assert in_proj.path_activation_elements == 3 * 5 * 8 + 2 * 5
    # attention's output (read by out_proj, 5 x 8), the norm's input and its 2 x 5 statistics
    assert out_proj.path_activation_elements == 5 * 8 + 5 * 8 + 2 * 5
