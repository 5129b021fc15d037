"""A strategy, a sampler and an importance measure added from outside the package: one
class each, registered."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from budgetplan import BudgetPlanCallback
from budgetplan.costs.build import layer_costs
from budgetplan.importance import MEASURES, Measure, register_measure
from budgetplan.planning.assemble import plan_from_choices
from budgetplan.planning.memory import Choice
from budgetplan.planning.solve import Solution
from budgetplan.strategies import STRATEGIES, Draw, LayerToTrain, Strategy, Training, register_strategy
from budgetplan.training.measure import importance_on_batches
from budgetplan.training.samplers import SAMPLERS, ChannelSampler, register_sampler

from ..helpers.tiny_modules import TinyModule, data, trainer


class LastChannels(ChannelSampler):
    """The last ``count`` input channels, every draw."""

    name = "test-last"

    def choose(self, scores, total, count, generator):
        return torch.arange(total - count, total)


class PointwiseAndHead(Strategy):
    """The 1x1 conv and the head only, channels by the sampler above, redrawn each epoch."""

    name = "test-pointwise"
    sampler = "test-last"
    source = "a test"

    def planner_overrides(self, costs):
        return {"include": ("net.features.6", "net.head.1")}


class HeadWindow(Strategy):
    """The head only, four consecutive input channels from a place the draw's seed picks."""

    name = "test-head-window"
    planned = False
    source = "a test"

    def prepare(self, plan, problem):
        self.problem, self.seeds = problem, []
        head = problem.costs.layer("net.head.1")
        return Training((LayerToTrain(head.name, head.in_channels, 0, head.bias_param),), (head.bias_param,), None)

    def draw(self, seed):
        self.seeds.append(seed)
        p = self.problem
        start = seed % 13
        choices = {"net.head.1": Choice(4, True)}
        solution = Solution(choices, "drawn", 0.0, self.name, 0.0)
        plan = plan_from_choices(p.costs, p.device, p.importance, p.options, solution)
        return Draw(plan, {"net.head.1": list(range(start, start + 4))})


class ChannelsWithGradient(Measure):
    """One point per input channel whose gradient is not zero, and per bias, at each step."""

    name = "test-count"
    short = "channels with a gradient"

    def channel_scores(self, norms, layer):
        return (norms > 0).float()

    def bias_score(self, norm, layer):
        return float(norm > 0)


@pytest.fixture
def registered():
    register_sampler(LastChannels)
    register_strategy(PointwiseAndHead)
    register_strategy(HeadWindow)
    register_measure(ChannelsWithGradient)
    yield
    del SAMPLERS["test-last"], STRATEGIES["test-pointwise"], STRATEGIES["test-head-window"]
    del MEASURES["test-count"]


class Selections(Callback):
    def __init__(self, budget: BudgetPlanCallback) -> None:
        self.budget, self.rows = budget, []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):  # type: ignore[no-untyped-def]
        self.rows.append({name: idx.tolist() for name, idx in self.budget.selection.items()})


def test_a_new_strategy_and_sampler_train(registered):
    budget = BudgetPlanCallback(device="cortex-m7", training_memory=3 * 1024, strategy="test-pointwise", batch_size=8)
    seen = Selections(budget)
    trainer(2, [budget, seen]).fit(TinyModule(dropout=0.0), data())
    assert budget.plan is not None
    assert {layer.name for layer in budget.plan.updated()} <= {"net.features.6", "net.head.1"}
    count = budget.plan.channels()["net.features.6"]
    assert 0 < count < 8  # a partial selection, else the sampler's rule shows nothing
    assert all(row["net.features.6"] == list(range(8 - count, 8)) for row in seen.rows)
    assert budget.sampler == "test-last" and budget.strategy.name == "test-pointwise"


def test_a_strategy_that_draws_its_own_choices(registered):
    budget = BudgetPlanCallback(device="cortex-m7", strategy="test-head-window")
    seen = Selections(budget)
    module = TinyModule(dropout=0.0)
    trainer(3, [budget, seen]).fit(module, data())
    trainable = {n for n, p in module.named_parameters() if p.requires_grad}
    assert trainable == {"net.head.1.weight", "net.head.1.bias"}
    windows = [list(range(seed % 13, seed % 13 + 4)) for seed in budget.strategy.seeds]
    assert len(windows) == 3 and len({str(w) for w in windows}) > 1  # one draw per epoch, and they differ
    assert [row["net.head.1"] for row in seen.rows] == [w for w in windows for _ in range(4)]
    assert budget.plan is not None and budget.plan.channels() == {"net.head.1": 4}


def test_a_new_importance_measure_scores_and_plans(registered):
    module = TinyModule(dropout=0.0)
    costs = layer_costs(module, module.example_input_array)
    batches = list(data())[:3]
    counted = importance_on_batches(module, batches, costs, "three batches", measure="test-count")
    assert counted.source == "measured: channels with a gradient, 3 batches of three batches"
    # every channel of every layer has a gradient at every step: weights in proportion to the input channels
    channels = {layer.name: layer.in_channels for layer in costs.layers}
    first = costs.layers[0].name
    for name, count in channels.items():
        assert counted.weight[name] / counted.weight[first] == pytest.approx(count / channels[first])
    budget = BudgetPlanCallback(device="cortex-m7", importance="measured", importance_measure="test-count")
    trainer(1, [budget]).fit(TinyModule(dropout=0.0), data())
    assert budget.plan is not None and "channels with a gradient" in budget.plan.importance_source
    with pytest.raises(Exception, match="unknown importance measure 'test-none'; choose one of"):
        BudgetPlanCallback(importance_measure="test-none")


def test_names_are_checked_against_the_registries(registered):
    with pytest.raises(Exception, match="sampler must be one of uniform, gradient, magnitude, largest, test-last"):
        BudgetPlanCallback(sampler="test-first")
    assert isinstance(STRATEGIES["test-pointwise"](), Strategy)


@pytest.mark.slow
def test_a_strategy_module_in_the_package_is_registered_and_listed(tmp_path):
    """One new file in budgetplan/strategies/ is the whole of a new strategy: it is found with
    the package, registered after the default, and in the table docs/callback.md shows."""
    import shutil
    import subprocess
    import sys

    import budgetplan

    copy = tmp_path / "budgetplan"
    shutil.copytree(Path(budgetplan.__file__).parent, copy, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "strategies" / "last_two.py").write_text(
        "from budgetplan.strategies.base import Strategy, register_strategy\n\n\n"
        "@register_strategy\n"
        "class LastTwo(Strategy):\n"
        '    name = "last-two"\n'
        '    layers, channels, memory = "the last two layers", "all", "the ILP\'s"\n\n'
        "    def planner_overrides(self, costs):\n"
        '        return {"include": tuple(layer.name for layer in costs.layers[-2:]), "ratios": (1.0,)}\n'
    )
    script = (
        "from budgetplan.strategies import STRATEGIES, strategy_table\n"
        "names = list(STRATEGIES)\n"
        "assert names[0] == 'budgetplan' and 'last-two' in names, names\n"
        "assert '| `last-two` | the last two layers | all | the ILP\\'s |' in strategy_table()\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


def test_the_docs_show_the_registrys_table():
    from budgetplan.strategies import strategy_table

    guide = (Path(__file__).resolve().parents[2] / "docs" / "callback.md").read_text()
    assert "\n".join("  " + line for line in strategy_table().splitlines()) in guide
