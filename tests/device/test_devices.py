from pathlib import Path

import pytest
import yaml

from budgetplan import ProfileError, load_device
from budgetplan.device.profile import profiles_dir, shipped_devices

REQUIRED_DEVICES = {
    "cortex-m7", "stm32h743", "cortex-m4", "nrf52840", "cortex-m33", "rp2040",
    "esp32-s3", "raspberry-pi-4", "jetson-nano",
}  # fmt: skip


def test_every_required_profile_ships():
    assert REQUIRED_DEVICES <= {p.name for p in shipped_devices()}


@pytest.mark.parametrize("path", sorted(profiles_dir().glob("*.yaml")), ids=lambda p: p.stem)
def test_profile_is_consistent(path):
    profile = load_device(path)
    assert profile.name == path.stem  # file name and profile name agree
    assert profile.budget <= profile.sram - profile.reserved
    assert profile.macs_per_second > 0 and profile.clock_hz > 0
    assert profile.description and profile.compute_assumption
    for alias in profile.aliases:
        assert load_device(alias) == profile


def test_cortex_m7_is_the_reference_board():
    m7 = load_device("stm32f746")
    assert (m7.name, m7.sram, m7.flash, m7.clock_hz, m7.budget) == (
        "cortex-m7", 320 * 1024, 1024 * 1024, 216e6, 256 * 1024,
    )  # fmt: skip


def test_unknown_device_lists_known_ones():
    with pytest.raises(ProfileError) as err:
        load_device("cortex-m77")
    message = str(err.value)
    assert "unknown device 'cortex-m77'" in message
    assert "cortex-m7" in message and "jetson-nano" in message


def _write(tmp_path: Path, **changes) -> Path:
    data = yaml.safe_load((profiles_dir() / "cortex-m7.yaml").read_text())
    for key, value in changes.items():
        if value is None:
            data.pop(key)
        else:
            data[key] = value
    path = tmp_path / "board.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_user_profile_file_loads(tmp_path):
    profile = load_device(_write(tmp_path, name="my-board", budget="200KB"))
    assert profile.name == "my-board" and profile.budget == 200 * 1024
    assert profile.source.endswith("board.yaml")


M7_BITS = {"weight": 8, "activation": 8, "gradient": 0, "bias": 32, "optimizer": 0, "mask": 1}


@pytest.mark.parametrize(
    ("changes", "field", "words"),
    [
        ({"sram": None}, "sram", "missing"),
        ({"sram": "-320KB"}, "sram", "negative"),
        ({"flash": "1 parsec"}, "flash", "unknown unit"),
        ({"sram": [320]}, "sram", "expected"),
        ({"bits": {"weight": 8}}, "bits.activation", "missing"),
        (
            {"bits": {"weight": "8", "activation": 8, "gradient": 0, "bias": 32, "optimizer": 0, "mask": 1}},
            "bits.weight",
            "expected one of",
        ),
        ({"budget": "400KB"}, "budget", "exceeds sram - reserved"),
        ({"executor": "magic"}, "executor", "not one of"),
        ({"sarm": "1KB"}, "sarm", "unknown field"),
        ({"max_step_latency": "soon"}, "max_step_latency", "duration"),
        ({"name": 7}, "name", "non-empty text"),
        (
            {"bits": {**M7_BITS, "grad": 32}},
            "bits.grad",
            "optionally activation_gradient",
        ),
        (
            {"bits": {**M7_BITS, "activation_gradient": 0}},
            "bits.activation_gradient",
            "more than 0",
        ),
    ],
)
def test_bad_profile_names_file_and_field(tmp_path, changes, field, words):
    path = _write(tmp_path, **changes)
    with pytest.raises(ProfileError) as err:
        load_device(path)
    message = str(err.value)
    assert str(path) in message
    assert f"field '{field}'" in message
    assert words in message


def test_profile_that_is_not_a_mapping(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ProfileError, match="expected a mapping"):
        load_device(path)


def test_missing_profile_file(tmp_path):
    with pytest.raises(ProfileError, match="cannot read"):
        load_device(tmp_path / "nope.yaml")


def test_gradients_passed_backward_are_priced_at_their_own_width():
    """``activation_gradient`` (the int8 library passes float32 gradients) prices the
    backward's buffers alone: the saved tensors and the forward keep the activation width."""
    import torch

    from budgetplan import solve
    from budgetplan.zoo.models import build_model

    model, _ = build_model("mobilenet_v2", 10, 0.35)
    example = torch.zeros(1, 3, 64, 64)
    int8, f32 = load_device("mps2-an500-int8"), load_device("mps2-an500-f32")
    assert (int8.bits.activation, int8.bits.backward, f32.bits.backward) == (8, 32, 32)
    assert load_device("cortex-m7").bits.backward == 8  # absent: the activation width
    # absent from the profile's data, so its plans keep their fingerprint
    assert "activation_gradient" not in load_device("cortex-m7").to_dict()["bits"]
    plan = solve(model, example, device=int8, budget="400KB")
    backward = [layer.backward_buffer_bytes for layer in plan.layers if layer.backward_buffer_bytes]
    forward = [layer.forward_buffer_bytes for layer in plan.layers]
    costs = {layer.name: layer for layer in plan.layers}
    assert backward and forward
    same = solve(model, example, device=f32, budget="400KB")
    for layer in same.layers:  # gradients 4 bytes on both boards; activations 1 byte against 4
        if layer.backward_buffer_bytes and costs[layer.name].backward_buffer_bytes:
            assert costs[layer.name].backward_buffer_bytes == layer.backward_buffer_bytes
        assert costs[layer.name].forward_buffer_bytes * 4 == pytest.approx(layer.forward_buffer_bytes)
