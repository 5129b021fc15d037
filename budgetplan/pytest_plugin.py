"""The pytest plugin (entry point ``pytest11``): a ``budgetplan_device`` argument that runs
a test once per device profile, the shipped ones or those listed under
``budgetplan_devices`` in ``pyproject.toml`` / ``pytest.ini`` or given with
``-o budgetplan_devices="cortex-m7 cortex-m4"`` (docs/ci.md)::

    [tool.pytest.ini_options]
    budgetplan_devices = ["cortex-m7", "boards/my_board.yaml"]
"""

from __future__ import annotations

from typing import Any


def pytest_addoption(parser: Any) -> None:
    parser.addini(
        "budgetplan_devices",
        "device profiles (names or files) a test taking budgetplan_device runs over; default: every shipped one",
        type="linelist",
    )


def pytest_generate_tests(metafunc: Any) -> None:
    if "budgetplan_device" not in metafunc.fixturenames:
        return
    from budgetplan.device.profile import load_device, shipped_devices

    lines = metafunc.config.getini("budgetplan_devices")  # a list, or lines; names split at spaces and commas
    names = [name for line in lines for name in line.replace(",", " ").split()]
    devices = [load_device(name) for name in names] if names else shipped_devices()
    metafunc.parametrize("budgetplan_device", devices, ids=[device.name for device in devices])
