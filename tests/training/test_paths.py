"""A forward whose path depends on its input: the plan names the layers its trace ran; a
training forward that runs another layer fails with an error that says so."""

import lightning.pytorch as pl
import pytest
import torch
from torch import nn

from budgetplan import BudgetPlanCallback, ModelError

from ..helpers.tiny_modules import trainer


class TwoBranches(pl.LightningModule):
    """``a`` for inputs of positive mean, ``b`` otherwise; ``unused`` never runs."""

    def __init__(self, example_sign: float) -> None:
        super().__init__()
        self.net = nn.ModuleDict({"a": nn.Linear(4, 3), "b": nn.Linear(4, 3), "unused": nn.Linear(4, 3)})
        self.example_input_array = torch.full((1, 4), example_sign)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net["a"](x) if x.mean() > 0 else self.net["b"](x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD([p for p in self.parameters() if p.requires_grad], lr=0.1)


def positive_data() -> torch.utils.data.DataLoader:
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(16, 4, generator=generator) + 0.1  # every batch takes branch a
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, torch.randint(0, 3, (16,))), batch_size=4)


@pytest.mark.parametrize("strategy", ["budgetplan", "trady"])
def test_a_training_forward_on_another_path_than_the_trace_fails_clearly(strategy):
    module = TwoBranches(example_sign=-1.0)  # traced through b; trains through a
    callback = BudgetPlanCallback(device="raspberry-pi-4", strategy=strategy, importance="prior")
    with pytest.raises(ModelError) as caught:
        trainer(1, [callback]).fit(module, positive_data())
    message = str(caught.value)
    assert message.startswith("BudgetPlanCallback: TwoBranches's forward ran net.a in training, a layer the plan")
    assert "the forward took another path than when it was traced" in message and "\n" not in message
    assert "example_input=" in message  # what would work


def test_layers_the_forward_never_runs_are_left_frozen():
    module = TwoBranches(example_sign=1.0)  # traced and trained through a; b and unused never run
    before = {name: p.detach().clone() for name, p in module.named_parameters()}
    callback = BudgetPlanCallback(device="raspberry-pi-4", importance="prior")
    trainer(1, [callback]).fit(module, positive_data())
    assert set(callback.selection) == {"net.a"}
    assert not torch.equal(module.net["a"].weight, before["net.a.weight"])
    for name in ("net.b.weight", "net.unused.weight"):
        assert torch.equal(dict(module.named_parameters())[name], before[name])
