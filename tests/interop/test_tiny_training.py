"""Sparse Update schemes (tiny-training backward_config) in and out of plans."""

from __future__ import annotations

import pytest
import torch
import torchvision
import yaml

from budgetplan.costs.build import layer_costs
from budgetplan.device.profile import load_device
from budgetplan.errors import PlanError
from budgetplan.importance.scores import prior_importance
from budgetplan.interop.scheme import ACCEPTED_KEYS, Scheme, load_scheme, scheme_from_dict, scheme_to_dict
from budgetplan.interop.tiny_training import (
    choices_from_scheme,
    convolutions,
    export_ratio,
    normalised,
    plan_from_scheme,
    scheme_from_plan,
)
from budgetplan.plan.model import Plan
from budgetplan.planning.assemble import plan_from_choices
from budgetplan.planning.memory import Choice, predict
from budgetplan.planning.options import PlannerOptions
from budgetplan.planning.solve import Solution
from budgetplan.report.export import tiny_training_config

from ..helpers.cli import REPO

# compilation/mcu_ir_gen.py of mit-han-lab/tiny-training (Lin et al. 2022), MobileNetV2-w0.35 at 128 px
PUBLISHED = {
    "49kb": (16, [36, 39, 40, 41, 42, 45, 48, 49], [1, 1, 0, 0.25, 0.125, 0.125, 0.125, 0.125]),
    "73kb": (20, [32, 33, 36, 39, 41, 42, 45, 48], [0.125, 0.5, 0.5, 1, 0.25, 0.125, 0.125, 1]),
    "99kb": (25, [27, 30, 33, 36, 39, 42, 45, 48], [1, 1, 1, 1, 1, 0.125, 0.5, 1]),
    "123kb": (31, [27, 30, 33, 36, 39, 42, 45, 48], [1, 1, 1, 1, 1, 0.5, 1, 1]),
    "138kb": (34, [27, 30, 33, 36, 39, 42, 45, 48], [1, 1, 1, 1, 1, 1, 1, 1]),
}
MODEL = "mobilenet_v2(width_mult=0.35, num_classes=10)"


@pytest.fixture(scope="module")
def device():
    return load_device("cortex-m7")


@pytest.fixture(scope="module")
def costs(device):
    model = torchvision.models.mobilenet_v2(width_mult=0.35, num_classes=10)
    return layer_costs(model, torch.zeros(1, 3, 128, 128), device, model_name=MODEL)


def _plan(costs, device, choices):
    importance = prior_importance(costs)
    return plan_from_choices(
        costs, device, importance, PlannerOptions(), Solution(choices, "optimal", 0.0, "test", 0.0)
    )


def _error(data, costs=None, source="scheme.yaml"):
    with pytest.raises(PlanError) as caught:
        scheme = scheme_from_dict(data, source)
        choices_from_scheme(scheme, costs)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(source), message
    return message


def test_the_shipped_files_are_the_published_schemes():
    for label, (n_bias, indices, ratios) in PUBLISHED.items():
        path = REPO / "examples" / "tiny-training" / f"mbv2-w0.35-{label}.yaml"
        assert "mcu_ir_gen.py" in path.read_text()
        config = yaml.safe_load(path.read_text())["backward_config"]
        written = (  # "-"-joined, as tiny-training's training scripts write them
            config["n_bias_update"],
            [int(part) for part in config["manual_weight_idx"].split("-")],
            [float(part) for part in config["weight_update_ratio"].split("-")],
        )
        assert written == (n_bias, indices, ratios)
        assert config["weight_select_criteria"] == "magnitude+" and config["pw1_weight_only"] == 0


def test_the_model_has_the_convolutions_the_schemes_number(costs):
    convs = convolutions(costs)
    assert len(convs) == 52 and costs.layers[-1].name == "classifier.1"
    # the expand (first pointwise) convs of blocks 10 to 17 are the weight-updated ones in 99kb
    assert [convs[i].name for i in (27, 48)] == ["features.10.conv.0.0", "features.17.conv.0.0"]
    assert convs[49].kind == "depthwise" and convs[51].name == "features.18.0"


@pytest.mark.parametrize("label", list(PUBLISHED))
def test_published_schemes_round_trip(costs, device, tmp_path, label):
    scheme = load_scheme(REPO / "examples" / "tiny-training" / f"mbv2-w0.35-{label}.yaml")
    n_bias, indices, ratios = PUBLISHED[label]
    choices = choices_from_scheme(scheme, costs)
    convs = convolutions(costs)
    # the last n_bias convolutions train their bias, the classifier everything
    assert {layer.name for layer in convs[52 - n_bias :]} | {"classifier.1"} == set(choices)
    assert choices["classifier.1"] == Choice(1280, True)
    for index, ratio in zip(indices, ratios, strict=True):
        assert choices[convs[index].name] == Choice(int(convs[index].in_channels * ratio), True)

    plan = plan_from_scheme(scheme, costs, device)
    # priced as a solved plan is: with the patch stage a solved plan would run, if any helps
    assert plan.predicted.peak_bytes <= predict(costs, device, choices).peak_bytes
    assert plan.predicted.training_memory_bytes == predict(costs, device, choices).training_memory_bytes
    path = tmp_path / "plan.yaml"
    plan.save(path)
    plan = Plan.load(path)
    assert {layer.name: (layer.channels, layer.bias) for layer in plan.updated()} == {
        name: (choice.channels, choice.bias) for name, choice in choices.items()
    }
    assert plan.options["sampler"] == "magnitude" and plan.options["resample"] == "never"
    assert plan.options["strategy"] == "sparse-update"

    exported = yaml.safe_load(tiny_training_config(plan, str(path)))["backward_config"]
    again = scheme_from_dict(exported, "exported")
    assert exported["n_bias_update"] == n_bias
    # the same values after normalising: a weight that keeps no channel trains only its bias
    kept = {i: int(convs[i].in_channels * r) for i, r in zip(indices, ratios, strict=True)}
    assert normalised(again, costs) == {i: c for i, c in kept.items() if c} == normalised(scheme, costs)
    assert choices_from_scheme(again, costs) == choices
    # written as tiny-training's training script reads them: "-"-joined, ratios only
    assert all(float(r) in (1, 0.5, 0.25, 0.125, 0.0625) for r in exported["weight_update_ratio"].split("-"))
    assert [int(i) for i in str(exported["manual_weight_idx"]).split("-")] == sorted(normalised(scheme, costs))


def test_string_forms_and_the_other_keys_are_read():
    scheme = scheme_from_dict(
        {
            "backward_config": {
                "enable_backward_config": 1, "n_bias_update": 5, "manual_weight_idx": "21-24-27",
                "weight_update_ratio": "1-1-0.5", "quantize_gradient": 0, "freeze_fc": 0, "train_scale": 0,
                "n_conv_backward": 3,
            },
            "run_config": {"bs256_lr": 0.01},  # the rest of a tiny-training config is not read
        },
        "config.yaml",
    )  # fmt: skip
    assert scheme == Scheme(5, (21, 24, 27), None, (1.0, 1.0, 0.5), "magnitude+", False)
    assert scheme_to_dict(scheme)["weight_update_ratio"] == [1, 1, 0.5]
    assert scheme_from_dict({"n_bias_update": 1, "manual_weight_idx": 7}).manual_weight_idx == (7,)


def test_n_weight_update_and_all(costs):
    last_two = scheme_from_dict({"n_bias_update": 4, "manual_weight_idx": None, "n_weight_update": 2})
    choices = choices_from_scheme(last_two, costs)
    convs = convolutions(costs)
    assert [choices[c.name] for c in convs[48:]] == [
        Choice(0, True), Choice(0, True), Choice(336, True), Choice(112, True),
    ]  # fmt: skip
    everything = choices_from_scheme(scheme_from_dict({"n_bias_update": "all", "n_weight_update": "all"}), costs)
    assert everything == {layer.name: Choice(layer.in_channels, True) for layer in costs.layers}
    weight_as_bias = scheme_from_dict({"n_bias_update": 3, "n_weight_update": "all", "weight_update_ratio": 0.5})
    assert [choices_from_scheme(weight_as_bias, costs)[c.name].channels for c in convs[49:]] == [168, 168, 56]


def test_pw1_weight_only_keeps_the_widening_pointwise_convs(costs):
    scheme = scheme_from_dict({"n_bias_update": 10, "n_weight_update": "all", "pw1_weight_only": 1})
    convs = convolutions(costs)
    trained = {i for i, c in enumerate(convs) if choices_from_scheme(scheme, costs).get(c.name, Choice()).channels}
    assert trained == {42, 45, 48, 51}  # expand convs 56 -> 336, and the last conv 112 -> 1280
    # the ratio list has one value per index left after filtering
    listed = {"n_bias_update": 10, "manual_weight_idx": [42, 43, 45], "weight_update_ratio": [1, 0.5]}
    counts = choices_from_scheme(scheme_from_dict({**listed, "pw1_weight_only": 1}), costs)
    assert (counts[convs[42].name].channels, counts[convs[45].name].channels) == (56, 28)


def test_ratio_zero_and_absolute_counts(costs):
    convs = convolutions(costs)
    zero = scheme_from_dict({"n_bias_update": 1, "manual_weight_idx": [51], "weight_update_ratio": [0]})
    assert choices_from_scheme(zero, costs)["features.18.0"] == Choice(0, True)
    counted = scheme_from_dict({"n_bias_update": 2, "manual_weight_idx": "50-51", "weight_update_ratio": "1-5"})
    choices = choices_from_scheme(counted, costs)
    assert (choices[convs[50].name].channels, choices[convs[51].name].channels) == (336, 5)
    assert scheme_from_dict({"n_bias_update": 1, "manual_weight_idx": [51], "weight_update_ratio": [5]})


MISTAKES = [
    ({"n_bias_update": 2, "n_weight_update": 1, "learning_rate": 0.1}, ["unknown key 'learning_rate'"]),
    ({"n_bias_update": 2, "manual_weight_idx": [60]}, ["'manual_weight_idx'", "index 60 is beyond", "0 to 51"]),
    ({"n_bias_update": 2, "manual_weight_idx": [40]}, ["'manual_weight_idx'", "not among the last 2", "to 12"]),
    ({"n_bias_update": 4, "manual_weight_idx": [49, 50], "weight_update_ratio": [1]}, ["1 values for 2"]),
    ({"n_bias_update": 1, "manual_weight_idx": [50, 51]}, ["field 'n_bias_update'", "at least 2"]),
    ({"n_bias_update": 60, "n_weight_update": 0}, ["field 'n_bias_update'", "52 convolutions"]),
    ({"n_bias_update": 2, "manual_weight_idx": [51, 50]}, ["field 'manual_weight_idx'", "increasing"]),
    ({"n_bias_update": 2, "manual_weight_idx": "50-x"}, ["field 'manual_weight_idx'", "'21-24-27'"]),
    ({"n_bias_update": 2, "manual_weight_idx": [51], "weight_update_ratio": [1.5]}, ["at most 1"]),
    ({"n_bias_update": 2, "manual_weight_idx": [51], "weight_update_ratio": [200]}, ["which has 112"]),
    ({"n_bias_update": 2, "manual_weight_idx": [51], "weight_update_ratio": 2}, ["up to 1"]),
    ({"n_bias_update": 2, "n_weight_update": 0, "weight_select_criteria": "magnitude"}, ["magnitude+"]),
    ({"n_bias_update": None, "n_weight_update": 0}, ["field 'n_bias_update'", "'all'"]),
    ({"n_bias_update": 2}, ["field 'n_weight_update' is missing"]),
    ({"manual_weight_idx": [51]}, ["field 'n_bias_update' is missing"]),
    ({"n_bias_update": 2, "n_weight_update": 1, "pw1_weight_only": "yes"}, ["field 'pw1_weight_only'"]),
    ([1, 2], ["not a Sparse Update scheme"]),
]


@pytest.mark.parametrize(("data", "words"), MISTAKES)
def test_each_mistake_is_one_line_naming_the_field(costs, data, words):
    message = _error(data, costs)
    for word in words:
        assert word in message, message
    if "unknown key" in message:
        assert all(key in message for key in ACCEPTED_KEYS)
    elif isinstance(data, dict):  # the field at fault is named
        assert any(f"field '{key}'" in message for key in ACCEPTED_KEYS), message


def test_a_scheme_file_that_is_not_yaml_is_named(tmp_path):
    path = tmp_path / "scheme.json"
    path.write_text('{"n_bias_update": 2, "n_weight_update": [}')
    with pytest.raises(PlanError, match=r"scheme\.json: not valid YAML"):
        load_scheme(path)
    path.write_text('{"n_bias_update": 2, "n_weight_update": 1}')
    assert load_scheme(path).n_weight_update == 1


def test_a_conv_without_a_bias_cannot_take_a_bias_update(device):
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, bias=False), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(4 * 4 * 4, 2)
    )
    table = layer_costs(net, torch.zeros(1, 3, 6, 6), device)
    message = _error({"n_bias_update": 1, "n_weight_update": 0}, table)
    assert "field 'n_bias_update'" in message and "convolution 0 (0) has no bias to train" in message


BIAS = Choice(0, True)
INEXPRESSIBLE = [
    ({"features.0.0": BIAS, "features.18.0": BIAS}, ["convolution 0 (features.0.0) trains its bias", "convolution 50"]),
    ({"features.17.conv.2": Choice(8, False), "features.18.0": BIAS}, ["trains 8 input channels but not its bias"]),
    ({"features.18.0": BIAS, "classifier.1": Choice(640, True)}, ["classifier.1 trains 640 of 1280", "in full"]),
    ({"features.18.0": BIAS, "classifier.1": Choice(1280, False)}, ["without its bias"]),
]


@pytest.mark.parametrize(("choices", "words"), INEXPRESSIBLE)
def test_a_plan_no_scheme_expresses_is_refused(costs, device, choices, words):
    full_head = {"classifier.1": Choice(1280, True)}
    plan = _plan(costs, device, {**full_head, **choices})
    with pytest.raises(PlanError) as caught:
        scheme_from_plan(plan)
    message = str(caught.value)
    assert "\n" not in message
    for word in words:
        assert word in message, message


def test_a_plan_with_biases_at_the_end_exports(costs, device):
    convs = convolutions(costs)
    choices = {c.name: Choice(0, True) for c in convs[-3:]}
    choices[convs[-1].name] = Choice(1, True)  # one channel of 112: written as a ratio int(112·r) == 1
    plan = _plan(costs, device, {**choices, "classifier.1": Choice(1280, True)})
    scheme = scheme_from_plan(plan)
    assert (scheme.n_bias_update, scheme.manual_weight_idx) == (3, (51,))
    assert choices_from_scheme(scheme_from_dict(scheme_to_dict(scheme)), costs)[convs[-1].name] == Choice(1, True)
    bias_only = scheme_from_plan(_plan(costs, device, {"classifier.1": Choice(1280, True)}))
    assert scheme_to_dict(bias_only) == {
        "enable_backward_config": 1, "n_bias_update": 0, "n_weight_update": 0, "manual_weight_idx": None,
        "weight_update_ratio": None, "weight_select_criteria": "magnitude+", "pw1_weight_only": 0,
    }  # fmt: skip


def test_every_channel_count_is_written_so_that_it_reads_back():
    for total in range(1, 400):
        for count in range(1, total + 1):
            ratio = export_ratio(count, total)
            assert ratio <= 1 and int(total * float(str(ratio))) == count, (count, total, ratio)


# --- plans tiny-training can run (--expressible tiny-training) -----------------------------


def _as_tiny_training_reads(block: dict, convs: list[torch.nn.Conv2d]) -> dict[int, int | None]:
    """What ``parsed_backward_config`` and ``prepare_model_for_backward_config`` of
    tiny-training make of ``block`` (algorithm/core/utils/partial_backward.py): the input
    channels kept per weight-trained convolution (None: every one), after its own checks."""
    n_conv = len(convs)
    n_bias = n_conv if block["n_bias_update"] == "all" else block["n_bias_update"]
    assert isinstance(n_bias, int)
    indices = [int(part) for part in str(block["manual_weight_idx"]).split("-")]
    assert all(index in [n_conv - 1 - i for i in range(n_bias)] for index in indices)  # weights train with biases
    assert indices == sorted(indices)
    ratio = block["weight_update_ratio"]
    ratios = [float(ratio)] * len(indices) if isinstance(ratio, (int, float)) else [float(p) for p in ratio.split("-")]
    assert len(ratios) == len(indices) and n_bias >= len(indices)
    return {index: int(convs[index].in_channels * r) for index, r in zip(indices, ratios, strict=True)}


@pytest.mark.slow
def test_an_expressible_plan_exports_as_a_backward_config_that_keeps_its_channels(tmp_path):
    from ..helpers.cli import run_cli

    plan_path, scheme_path = tmp_path / "plan.yaml", tmp_path / "scheme.yaml"
    plain = run_cli("solve", "--device", "cortex-m7", "--out", str(tmp_path / "plain.yaml"))
    assert plain.returncode == 0, plain.stderr
    refused = run_cli("export", str(tmp_path / "plain.yaml"), "--format", "tiny-training")
    assert refused.returncode != 0  # the default plan says what a backward_config cannot
    solved = run_cli("solve", "--device", "cortex-m7", "--expressible", "tiny-training", "--out", str(plan_path))
    assert solved.returncode == 0, solved.stderr
    exported = run_cli("export", str(plan_path), "--format", "tiny-training", "--out", str(scheme_path))
    assert exported.returncode == 0, exported.stderr
    plan = Plan.load(plan_path)
    model = torchvision.models.mobilenet_v2(width_mult=0.35, num_classes=10)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    names = [name for name, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)]
    kept = _as_tiny_training_reads(yaml.safe_load(scheme_path.read_text())["backward_config"], convs)
    by_name = {layer.name: layer for layer in plan.layers}
    assert kept == {i: by_name[names[i]].channels for i in range(len(convs)) if by_name[names[i]].channels}
    n_bias = yaml.safe_load(scheme_path.read_text())["backward_config"]["n_bias_update"]
    assert [by_name[name].bias for name in names] == [False] * (len(names) - n_bias) + [True] * n_bias
    assert plan.objective <= Plan.load(tmp_path / "plain.yaml").objective


def test_expressible_plans_at_every_budget_export_as_backward_configs():
    from budgetplan import solve

    model = torchvision.models.mobilenet_v2(width_mult=0.35, num_classes=10)
    for budget in ("48KB", "96KB", "192KB"):
        plan = solve(model, torch.zeros(1, 3, 64, 64), device="cortex-m7", budget=budget, expressible="tiny-training")
        scheme_from_plan(plan)  # a PlanError where the plan says what a backward_config cannot
