"""BudgetPlanCallback in Trainer.fit: freezing, exactness, resampling, checkpoints, errors."""

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import Callback

from budgetplan import BudgetPlanCallback, BudgetPlanError, InfeasibleError, PlanError
from budgetplan.training.channels import weight_mask
from budgetplan.training.clipping import clip_relative

from ..helpers.tiny_modules import TinyModule, data, partial_plan, trainer

PARTIAL = {"net.features.0": 2, "net.features.3": 3, "net.features.6": 5}
SHIPPED_STRATEGIES = [
    "budgetplan",
    "trady",
    "gradient",
    "dynamic-gradient",
    "sparse-update",
    "classifier",
    "bias",
    "full",
]


class Probe(Callback):
    """Checks, after every step, that nothing outside the selection moved."""

    def __init__(self, budget: BudgetPlanCallback) -> None:
        self.budget = budget
        self.problems: list[str] = []
        self.selections: list[dict[str, list[int]]] = []
        self.changed = 0

    def on_fit_start(self, trainer, pl_module):
        self.initial = {n: p.detach().clone() for n, p in pl_module.named_parameters()}
        self.stats = {n: b.detach().clone() for n, b in pl_module.named_buffers() if "running" in n}

    def on_train_epoch_start(self, trainer, pl_module):
        self.at_start = {n: p.detach().clone() for n, p in pl_module.named_parameters()}
        self.selections.append({k: v.tolist() for k, v in self.budget.selection.items()})
        self._check_state_reset(trainer, pl_module)

    def _check_state_reset(self, trainer, pl_module):
        optimizer = trainer.optimizers[0]
        for name, idx in self.budget.selection.items():
            weight = dict(pl_module.named_modules())[name].weight
            if len(self.selections) < 2 or not optimizer.state.get(weight):
                continue
            before = torch.tensor(self.selections[-2][name])
            entering = [c for c in idx.tolist() if c not in before.tolist()]
            groups = getattr(dict(pl_module.named_modules())[name], "groups", 1)
            mask = weight_mask(weight.shape, torch.tensor(entering, dtype=torch.long), groups)
            for key, value in optimizer.state[weight].items():
                if value.shape == weight.shape and value[mask].any():
                    self.problems.append(f"{key} of entering channels of {name} not reset")

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if any(m.training for m in pl_module.modules() if isinstance(m, torch.nn.BatchNorm2d)):
            self.problems.append("a BatchNorm is in training mode during a step")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        modules = dict(pl_module.named_modules())
        for name, param in pl_module.named_parameters():
            module_name = name.rsplit(".", 1)[0]
            if module_name in self.budget.selection and name.endswith("weight"):
                idx = self.budget.selection[module_name]
                mask = weight_mask(param.shape, idx, getattr(modules[module_name], "groups", 1))
                if not torch.equal(param[~mask], self.at_start[name][~mask]):
                    self.problems.append(f"{name}: entries outside the selection moved")
                self.changed += int(not torch.equal(param[mask], self.at_start[name][mask]))
            elif not param.requires_grad and not torch.equal(param, self.initial[name]):
                self.problems.append(f"frozen {name} moved")

    def on_fit_end(self, trainer, pl_module):
        for name, buffer in pl_module.named_buffers():
            if name in self.stats and not torch.equal(buffer, self.stats[name]):
                self.problems.append(f"{name} drifted")


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw"])
def test_exactness_with_each_optimizer(optimizer):
    pl.seed_everything(0)
    budget = BudgetPlanCallback(
        plan=partial_plan(PARTIAL), seed=3, resample="epoch", sampler="uniform", returning_state="reset"
    )  # the probe checks that channels entering the selection start from zeroed state
    probe = Probe(budget)
    module = TinyModule(optimizer)
    trainer(3, [budget, probe], limit_val_batches=1).fit(module, data(), data(8))
    assert probe.problems == []
    assert probe.changed > 0  # the selected entries did train
    assert len({str(s) for s in probe.selections}) == 3  # a fresh draw each epoch
    for name, count in PARTIAL.items():
        idx = budget.selection[name]
        assert idx.dtype == torch.long and idx.numel() == count and torch.equal(idx, idx.sort().values)


def test_freezes_before_the_optimizer_is_built():
    pl.seed_everything(0)
    module = TinyModule()
    budget = BudgetPlanCallback(plan=partial_plan(PARTIAL))
    trainer(1, [budget]).fit(module, data())
    expected = {f"{name}.weight" for name in PARTIAL} | {"net.head.1.weight", "net.head.1.bias"}
    expected |= {p.bias_param.replace("net.", "net.", 1) for p in budget.plan.layers if p.bias and p.bias_param}
    assert module.trainable_at_configure == {f"{n}" for n in expected}


def test_resampling_modes():
    pl.seed_everything(0)
    seen = {}
    for resample in ("epoch", "step", "never"):
        budget = BudgetPlanCallback(plan=partial_plan(PARTIAL), resample=resample, sampler="uniform", seed=1)

        class Record(Callback):
            def on_train_batch_start(self, trainer, pl_module, batch, batch_idx, _b=budget, _r=resample):
                seen.setdefault(_r, []).append(str({k: v.tolist() for k, v in _b.selection.items()}))

        trainer(2, [budget, Record()]).fit(TinyModule(), data())
    assert len(set(seen["step"])) == len(seen["step"]) == 8  # every step draws anew
    assert len(set(seen["epoch"])) == 2 and seen["epoch"][0] == seen["epoch"][3]
    assert len(set(seen["never"])) == 1


def test_draws_depend_only_on_seed_epoch_and_step():
    selections = []
    for seed in (5, 5, 6):
        budget = BudgetPlanCallback(plan=partial_plan(PARTIAL), seed=seed, sampler="uniform")
        trainer(1, [budget]).fit(TinyModule(), data())
        selections.append({k: v.tolist() for k, v in budget.selection.items()})
    assert selections[0] == selections[1] != selections[2]


def test_magnitude_sampler_keeps_the_largest_channels():
    module = TinyModule()
    weight = module.net.features[6].weight.detach().clone()  # 1x1 conv, 8 input channels
    budget = BudgetPlanCallback(plan=partial_plan(PARTIAL), sampler="magnitude")
    trainer(2, [budget]).fit(module, data())
    norms = weight.pow(2).sum(dim=(0, 2, 3))
    assert budget.selection["net.features.6"].tolist() == sorted(norms.topk(5).indices.tolist())


def test_gradient_sampler_favours_large_gradients():
    pl.seed_everything(0)
    budget = BudgetPlanCallback(plan=partial_plan(PARTIAL), sampler="gradient", seed=2)
    trainer(3, [budget]).fit(TinyModule(), data())
    assert budget.coverage() > 0
    assert all(v.numel() == PARTIAL[k] for k, v in budget.selection.items() if k in PARTIAL)


def straight_and_resumed(tmp_path, make_callback, trainable_only=False, epochs=4, stop=2, **options):
    """Two fits of ``epochs`` epochs from the same start: one straight through, and one stopped
    after ``stop`` epochs and resumed from its checkpoint; their modules, and the callback
    of the resumed one."""

    def run(max_epochs, ckpt=None, save=None):
        pl.seed_everything(0)
        # checkpoints do not carry dropout's random state
        module = TinyModule("adam", dropout=0.0, trainable_only=trainable_only)
        budget = make_callback()
        t = trainer(max_epochs, [budget], **options)
        t.fit(module, data(), ckpt_path=ckpt)
        if save:
            t.save_checkpoint(save)
        return module, budget

    straight, _ = run(epochs)
    run(stop, save=tmp_path / "stopped.ckpt")
    resumed, budget = run(epochs, ckpt=tmp_path / "stopped.ckpt")
    for (name, a), (_, b) in zip(straight.state_dict().items(), resumed.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    return budget


@pytest.mark.parametrize("sampler", ["uniform", "gradient"])
def test_resume_equals_an_uninterrupted_fit(tmp_path, sampler):
    budget = straight_and_resumed(
        tmp_path, lambda: BudgetPlanCallback(plan=partial_plan(PARTIAL), sampler=sampler, seed=4)
    )
    assert budget.coverage() > 0


@pytest.mark.parametrize("strategy", SHIPPED_STRATEGIES)
def test_resume_of_each_strategy_with_only_trainable_parameters_in_the_optimizer(tmp_path, strategy):
    """The README's optimizer holds what requires a gradient when it is built; resumed, it
    holds the same parameters as at the start of the run that saved the checkpoint (so its
    state loads), and the fit goes on as if never stopped."""
    # 2KB: trady's first draw leaves some of its layers without channels, frozen when saved;
    # sparse-update's contribution analysis takes half a minute: the prior ranks instead
    importance = "prior" if strategy == "sparse-update" else None

    def callback():
        return BudgetPlanCallback(strategy=strategy, training_memory="2KB", batch_size=8, seed=4, importance=importance)

    budget = straight_and_resumed(tmp_path, callback, trainable_only=True, epochs=3, stop=1, limit_train_batches=2)
    assert budget.trained_fraction() > 0


def test_plan_solved_at_setup_uses_the_example_input():
    budget = BudgetPlanCallback(device="raspberry-pi-4", example_input=torch.zeros(1, 3, 12, 12))
    trainer(1, [budget]).fit(TinyModule(), data())
    assert budget.plan.input_shape == (3, 12, 12)
    from_array = BudgetPlanCallback(device="raspberry-pi-4")
    trainer(1, [from_array]).fit(TinyModule(), data())
    assert from_array.plan.input_shape == (3, 8, 8)
    from_batch = BudgetPlanCallback(device="raspberry-pi-4")
    trainer(1, [from_batch]).fit(TinyModule(example=False), data())
    assert from_batch.plan.input_shape == (3, 8, 8)


def test_plan_file_for_the_bare_network_applies_to_the_module(tmp_path):
    from budgetplan import solve

    from ..helpers.tiny_modules import TinyNet

    path = tmp_path / "plan.yaml"
    solve(TinyNet(), torch.zeros(1, 3, 8, 8), "raspberry-pi-4", model_name="TinyNet").save(path)
    budget = BudgetPlanCallback(plan=str(path))
    trainer(1, [budget]).fit(TinyModule(), data())
    assert "net.head.1" in budget.selection  # plan names found under the module's "net." prefix


def test_mismatched_plan_fails_before_the_first_step(tmp_path):
    from budgetplan import solve
    from budgetplan.zoo.models import build_model

    model, name = build_model("mobilenet_v2", 4, 0.35)
    path = tmp_path / "plan.yaml"
    solve(model, torch.zeros(1, 3, 32, 32), "raspberry-pi-4", model_name=name).save(path)
    original = path.read_bytes()
    module = TinyModule()
    with pytest.raises(
        PlanError, match=r"does not match TinyModule: .*features\.0\.0 \(in the plan, not in the model\)"
    ):
        trainer(1, [BudgetPlanCallback(plan=str(path))]).fit(module, data())
    assert module.steps == 0
    assert path.read_bytes() == original


def test_infeasible_budget_fails_with_the_planner_message():
    module = TinyModule()
    with pytest.raises(InfeasibleError, match=r"smallest budget .* \(--budget \d+KB\)"):
        # importance_batches=0: measuring would call training_step, and this counts training steps
        callback = BudgetPlanCallback(device="cortex-m7", budget="100B", importance_batches=0)
        trainer(1, [callback]).fit(module, data())
    assert module.steps == 0


def test_logs_memory_and_coverage():
    budget = BudgetPlanCallback(plan=partial_plan(PARTIAL))
    t = trainer(1, [budget])
    t.fit(TinyModule(), data())
    metrics = t.callback_metrics
    for key in ("predicted_bytes", "budget_bytes", "trained_fraction", "coverage", "saved_bytes_per_sample"):
        assert f"budgetplan/{key}" in metrics
    assert 0 < float(metrics["budgetplan/trained_fraction"]) < 1
    assert float(metrics["budgetplan/saved_bytes_per_sample"]) == pytest.approx(budget.saved_bytes_per_sample)


def test_bad_arguments():
    with pytest.raises(Exception, match="resample must be one of"):
        BudgetPlanCallback(resample="sometimes")
    with pytest.raises(Exception, match="sampler must be one of"):
        BudgetPlanCallback(sampler="best")
    with pytest.raises(Exception, match="clip_ratio must be a number >= 0"):
        BudgetPlanCallback(clip_ratio=-1)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (dict(budget="nan"), r"budget: cannot read 'nan'; expected a size such as 320KB"),
        (dict(budget="abc"), r"budget: cannot read 'abc'; expected a size"),
        (dict(budget="-5KB"), r"budget: '-5KB' is negative; expected a size"),
        (dict(budget=-5), r"budget: .*negative; expected a size"),
        (dict(budget=float("inf")), r"budget: .*not finite; expected a size"),
        (dict(budget=float("nan")), r"budget: .*not finite; expected a size"),
        (dict(budget="0KB"), r"budget: '0KB' is not positive; expected a size"),
        (dict(device="cortex-m8"), r"device: unknown device 'cortex-m8'\. Did you mean 'cortex-m7'\?"),
        (dict(plan="no/such/plan.yaml"), r"plan: cannot read 'no/such/plan\.yaml' \(No such file or directory\); give"),
        (dict(plan="."), r"plan: cannot read '\.' \(Is a directory\); give the path of a plan file"),
        (dict(plan=5), r"plan: expected a Plan or a plan file's path, got int"),
    ],
)
def test_unreadable_arguments_fail_at_construction(arguments, message):
    with pytest.raises(BudgetPlanError, match=r"^BudgetPlanCallback: " + message) as caught:
        BudgetPlanCallback(**arguments)
    assert "\n" not in str(caught.value)


def test_an_empty_training_loader_fails_with_a_clear_error():
    empty = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.zeros(0, 3, 8, 8)), batch_size=8)
    module = TinyModule(example=False)  # the plan is solved on the first training batch
    with pytest.raises(BudgetPlanError, match=r"^BudgetPlanCallback: the training loader yields no batch"):
        trainer(1, [BudgetPlanCallback(device="raspberry-pi-4")]).fit(module, empty)


class GradientRatios(Callback):
    """The largest gradient-to-weight norm ratio of any output unit, per trained layer, as
    the optimizer receives it (runs after the budget callback's hooks)."""

    def __init__(self) -> None:
        self.largest: dict[str, float] = {}

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        for name, param in pl_module.named_parameters():
            if param.grad is not None and param.ndim > 1:
                dims = tuple(range(1, param.ndim))
                grad, weight = (torch.linalg.vector_norm(t, dim=dims) for t in (param.grad, param.detach()))
                ratio = (grad / weight.clamp_min(1e-3)).max()
                self.largest[name] = max(self.largest.get(name, 0.0), float(ratio))


@pytest.mark.parametrize("clip_ratio", [0, 1e-4])
def test_clip_ratio_bounds_each_unit_but_the_classifiers(clip_ratio):
    budget = BudgetPlanCallback(plan=partial_plan(PARTIAL), clip_ratio=clip_ratio)
    ratios = GradientRatios()
    trainer(1, [budget, ratios]).fit(TinyModule(), data())
    convs = {name: ratio for name, ratio in ratios.largest.items() if "features" in name}
    assert set(convs) == {f"{name}.weight" for name in PARTIAL}
    if not clip_ratio:
        assert min(convs.values()) > 1e-3
    else:
        assert max(convs.values()) <= clip_ratio * (1 + 1e-4)
    assert ratios.largest["net.head.1.weight"] > 1e-3  # the classifier is never clipped


def test_clip_relative_cuts_only_units_over_the_limit():
    weight = torch.nn.Parameter(torch.tensor([[3.0, 4.0], [0.0, 0.0], [1.0, 0.0]]))
    weight.grad = torch.tensor([[6.0, 8.0], [1.0, 0.0], [0.1, 0.0]])
    clip_relative([weight], ratio=0.5)
    # unit 0: ‖G‖ 10 cut to 0.5 · 5; unit 1: zero weights, the floor 1e-3; unit 2 under the limit
    assert torch.allclose(weight.grad, torch.tensor([[1.5, 2.0], [5e-4, 0.0], [0.1, 0.0]]))
