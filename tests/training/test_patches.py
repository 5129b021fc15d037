"""The patch executor on the host: the same result as the ordinary forward, and the
memory its plan claims."""

import pytest
import torch
import torchvision
from torch import nn

from budgetplan.errors import ModelError
from budgetplan.training.patches import PatchedForward


@pytest.fixture(scope="module")
def mobilenet():
    torch.manual_seed(0)
    return torchvision.models.mobilenet_v2(width_mult=0.35, num_classes=10).eval()


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=10).eval()


CASES = [
    ("mobilenet", 128, "features.3.conv.0.0", 3),
    ("mobilenet", 128, "features.3.conv.0.0", 8),
    ("mobilenet", 128, "features.7.conv.0.0", 4),
    ("resnet", 96, "layer1.0.conv1", 3),  # after the stride-2 stem and the max pool
    ("resnet", 96, "layer2.1.conv1", 4),  # past a strided residual block
]


@pytest.mark.parametrize(("name", "size", "split", "grid"), CASES)
def test_patched_forward_equals_the_ordinary_one(request, name, size, split, grid):
    model = request.getfixturevalue(name)
    x = torch.randn(2, 3, size, size)
    patched = PatchedForward(model, x[:1], split, grid)
    with torch.no_grad():
        expected = model(x)
    assert (patched(x) - expected).abs().max().item() <= 1e-5
    # the largest tensor any patch made is what the cost model claims, far below whole
    assert patched.largest_elements == patched.claimed_elements
    assert patched.largest_elements < patched.largest_whole_elements


@pytest.mark.slow
def test_the_plans_patch_stage_runs(mobilenet, default_costs_by_executor):
    from budgetplan.device.profile import load_device
    from budgetplan.planning.assemble import plan_from_costs

    costs = default_costs_by_executor["patch"]
    plan = plan_from_costs(costs, load_device("rp2040"))
    stage = next(
        o
        for o in costs.patch_options
        if o.grid == plan.predicted.patch_grid and costs.layers[o.split].name == plan.predicted.patch_until
    )
    x = torch.randn(1, 3, 128, 128)
    patched = PatchedForward(mobilenet, x, plan.predicted.patch_until, plan.predicted.patch_grid)
    assert (patched(x) - mobilenet(x)).abs().max().item() <= 1e-5
    # every tensor a patch made fits in the working set the plan counts for the stage
    assert patched.largest_elements < stage.live_elements


def test_training_through_the_installed_executor(mobilenet):
    """Installed, the model itself runs in patches; gradients reach the layers after the split."""
    import copy

    model = copy.deepcopy(mobilenet)
    for p in model.parameters():
        p.requires_grad_(False)
    head = model.classifier[1]
    head.weight.requires_grad_(True)
    x, target = torch.randn(2, 3, 96, 96), torch.tensor([1, 4])
    reference = nn.functional.cross_entropy(model(x), target)
    (expected,) = torch.autograd.grad(reference, head.weight)
    patched = PatchedForward(model, x[:1], "features.3.conv.0.0", 3)
    with patched.install():
        loss = nn.functional.cross_entropy(model(x), target)
        (grad,) = torch.autograd.grad(loss, head.weight)
        assert patched.largest_elements == patched.claimed_elements
    assert torch.allclose(grad, expected, atol=1e-5)
    # uninstalled, the model runs whole again
    model(x)
    assert patched.largest_elements == patched.claimed_elements


def test_refuses_what_patches_cannot_run(mobilenet):
    x = torch.zeros(1, 3, 64, 64)
    with pytest.raises(ModelError, match="no layer named"):
        PatchedForward(mobilenet, x, "features.99", 2)
    with pytest.raises(ModelError, match="cannot run"):
        PatchedForward(mobilenet, x, "classifier.1", 2)  # past the global pool
    model = torchvision.models.mobilenet_v2(width_mult=0.35, num_classes=10)
    model.features[0][1].train()
    patched = PatchedForward(model, x, "features.2.conv.0.0", 2)
    with pytest.raises(ModelError, match="training mode"):
        patched(x)


@pytest.mark.parametrize("how", ["installed", "callback"])
def test_a_fit_with_the_patch_stage_equals_one_without(how):
    """BudgetPlanCallback trains the layers after the split; run in patches (installed
    around the fit, or by the callback from the plan's patch stage) or whole, the same
    steps give the same weights, dropout's masks included: setting up the stage (its
    example input is the first training batch) draws nothing from the random states."""
    import dataclasses

    import lightning.pytorch as pl

    from budgetplan import BudgetPlanCallback

    from ..helpers.tiny_modules import TinyModule, data, partial_plan, trainer

    plan = partial_plan({"net.features.6": 8})
    staged = dataclasses.replace(
        plan, predicted=dataclasses.replace(plan.predicted, patch_grid=2, patch_until="net.features.6")
    )
    results = []
    for patched in (False, True):
        pl.seed_everything(0)
        module = TinyModule(example=False, dropout=0.5)  # the stage traces the first training batch
        start = {name: p.detach().clone() for name, p in module.named_parameters()}
        if patched and how == "callback":
            callback = BudgetPlanCallback(plan=staged, seed=1, patches=True)
            trainer(2, [callback]).fit(module, data())
            assert callback.patched is not None
            assert callback.patched.largest_elements == callback.patched.claimed_elements  # the patches ran
            assert callback.patched.largest_elements < callback.patched.largest_whole_elements
        elif patched:
            fit = trainer(2, [BudgetPlanCallback(plan=plan, seed=1)])
            runner = PatchedForward(module.net, torch.zeros(1, 3, 8, 8), "features.6", 2)
            with runner.install():
                fit.fit(module, data())
            assert runner.largest_elements == runner.claimed_elements  # the patches did run
        else:
            trainer(2, [BudgetPlanCallback(plan=plan, seed=1)]).fit(module, data())
        results.append({name: p.detach().clone() for name, p in module.named_parameters()})
    whole, patched_run = results
    assert not torch.equal(whole["net.features.6.weight"], start["net.features.6.weight"])  # it trained
    for name in whole:
        assert torch.allclose(whole[name], patched_run[name], atol=1e-5), name
