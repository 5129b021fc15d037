"""Sparse Update's memory accounting (Lin et al. 2022), and the accounting a plan reports."""

from __future__ import annotations

import pytest
import torch
import yaml
from torch import nn

from budgetplan.costs.build import layer_costs
from budgetplan.errors import BudgetPlanError, PlanError
from budgetplan.importance.scores import prior_importance
from budgetplan.plan.model import Plan
from budgetplan.planning.accounting import sparse_update_bits, sparse_update_memory
from budgetplan.planning.assemble import plan_from_choices
from budgetplan.planning.memory import Choice
from budgetplan.planning.options import PlannerOptions
from budgetplan.planning.solve import Solution

from ..helpers.costs import make_device


class Tiny(nn.Module):
    """conv 3->8 (3x3) + BN + ReLU, depthwise 8 (3x3) + BN + ReLU, pointwise 8->4 with a bias,
    global average pool, Linear 4->10; input 3x6x6 (every conv keeps 6x6)."""

    def __init__(self, grouped: bool = False) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
        self.dw = nn.Sequential(
            nn.Conv2d(8, 8, 3, padding=1, groups=2 if grouped else 8, bias=False), nn.BatchNorm2d(8), nn.ReLU()
        )
        self.pw = nn.Conv2d(8, 4, 1)
        self.fc = nn.Linear(4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pw(self.dw(self.conv(x))).mean((2, 3)))


@pytest.fixture(scope="module")
def tiny():
    return layer_costs(Tiny(), torch.zeros(1, 3, 6, 6))


def test_the_table_has_what_the_accounting_reads(tiny):
    names = [layer.name for layer in tiny.layers]
    assert names == ["conv.0", "dw.0", "pw", "fc"]
    dw = tiny.layer("dw.0")
    assert (dw.kind, dw.groups, dw.input_hw, dw.output_hw, dw.kernel_size) == ("depthwise", 8, (6, 6), (6, 6), (3, 3))
    assert (dw.weight_elements_per_channel, dw.activation_elements_per_channel, dw.bias_elements) == (9, 36, 8)
    assert tiny.layer("conv.0").bias_param == "conv.1.bias"


def test_sparse_update_memory_by_hand(tiny):
    choices = {"conv.0": Choice(0, True), "dw.0": Choice(3, True), "pw": Choice(2, True), "fc": Choice(4, True)}
    conv = 8 * 36 * 1 + 8 * 32  # mask of each output element, 32-bit bias
    dw = 8 * 36 + 8 * 32 + 36 * 3 * 8 + 3 * 9 * 8  # + 3 kept input planes, 3 kept 3x3 filters
    pw = 4 * 36 + 4 * 32 + 36 * 2 * 8 + 4 * 2 * 1 * 8  # + 2 kept planes, C_out x 2 x 1x1 weights
    fc = 4 * 8  # its input; its weights and bias count 0 bits
    assert sparse_update_bits(tiny, choices) == {"conv.0": conv, "dw.0": dw, "pw": pw, "fc": fc}
    assert sparse_update_memory(tiny, choices) == (conv + dw + pw + fc) / 8 == 389.0
    # activations and masks per sample, weights and biases once
    per_sample = 8 * 36 + 8 * 36 + 36 * 3 * 8 + 4 * 36 + 36 * 2 * 8 + 4 * 8
    assert sparse_update_memory(tiny, choices, batch_size=2) == (conv + dw + pw + fc + per_sample) / 8


def test_what_is_off_the_gradient_path_costs_nothing(tiny):
    assert sparse_update_memory(tiny, {"fc": Choice(4, True)}) == 4
    # a frozen conv after the first updated one still passes the gradient on: its mask counts
    assert sparse_update_bits(tiny, {"dw.0": Choice(0, True), "fc": Choice(4, True)}) == {
        "dw.0": 8 * 36 + 8 * 32, "pw": 4 * 36, "fc": 32,
    }  # fmt: skip
    assert sparse_update_memory(tiny, {}) == 0


def test_a_grouped_conv_keeps_its_whole_input_and_weights():
    costs = layer_costs(Tiny(grouped=True), torch.zeros(1, 3, 6, 6))
    assert costs.layer("dw.0").kind == "grouped"
    bits = sparse_update_bits(costs, {"dw.0": Choice(1, True)})
    assert bits["dw.0"] == 8 * 36 + 8 * 32 + 36 * 8 * 8 + 8 * 4 * 9 * 8


CHOICES = {"dw.0": Choice(3, True), "pw": Choice(2, True), "fc": Choice(4, True)}


def plan_in(tiny, accounting="budgetplan"):
    options = PlannerOptions(accounting=accounting)
    solution = Solution(CHOICES, "optimal", 0.0, "test", 0.0)
    return plan_from_choices(tiny, make_device(), prior_importance(tiny), options, solution)


@pytest.fixture(scope="module")
def plan(tiny):
    return plan_in(tiny)


def test_the_plan_reports_the_accounting_it_names(tiny, plan, tmp_path):
    # every plan carries both figures and reports budgetplan's unless told otherwise
    expected = sparse_update_memory(tiny, CHOICES)
    assert plan.training_accounting == "budgetplan" and plan.sparse_update_bytes == expected
    assert plan.training_memory_bytes == plan.predicted.training_memory_bytes
    theirs = plan_in(tiny, "sparse-update")
    assert theirs.training_memory_bytes == theirs.sparse_update_bytes == expected
    assert theirs.training_memory_by_accounting() == {
        "budgetplan": plan.predicted.training_memory_bytes, "sparse-update": expected,
    }  # fmt: skip
    data = theirs.to_dict()
    assert data["training_memory_accounting"] == "sparse-update" and data["training_memory_bytes"] == expected
    path = tmp_path / "plan.yaml"
    theirs.save(path)
    assert Plan.load(path).to_dict() == data
    ours = plan_in(tiny, "budgetplan")
    assert ours.training_memory_bytes == plan.predicted.training_memory_bytes and ours.sparse_update_bytes == expected


def test_a_file_without_the_accounting_reads_as_ours(plan, tmp_path):
    data = plan.to_dict()
    for key in ("training_memory_accounting", "training_memory_bytes", "training_memory_by_accounting"):
        del data[key]
    read = Plan.from_dict(data, "plain.yaml")
    assert read.training_accounting == "budgetplan" and read.sparse_update_bytes is None


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        ({"training_memory_accounting": "paper"}, "field 'training_memory_accounting': 'paper' is not one of"),
        (
            {"training_memory_accounting": "sparse-update", "training_memory_by_accounting": {"sparse-update": None}},
            "holds no sparse-update figure",
        ),
        ({"training_memory_by_accounting": [1]}, "field 'training_memory_by_accounting': expected a mapping"),
        ({"training_memory_by_accounting": {"sparse-update": -1}}, "field 'sparse-update': expected a finite number"),
    ],
)
def test_a_bad_accounting_in_a_file_is_named(plan, tmp_path, edit, words):
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump({**plan.to_dict(), **edit}))
    with pytest.raises(PlanError, match=r"plan\.yaml") as caught:
        Plan.load(path)
    assert words in str(caught.value)


def test_an_unknown_accounting_is_refused(tiny):
    with pytest.raises(BudgetPlanError, match="accounting must be one of budgetplan, sparse-update"):
        PlannerOptions(accounting="ours")
    with pytest.raises(BudgetPlanError, match="accounting must be one of"):
        plan_in(tiny, "ours")
