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
