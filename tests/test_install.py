"""A non-editable install into a new virtual environment finds every profile."""

import json
import subprocess
import sys
import zipfile

import pytest

from budgetplan.device.profile import profiles_dir

from .helpers.cli import REPO


@pytest.mark.slow
def test_wheel_ships_the_profiles(tmp_path):
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist), str(REPO)],
        check=True,
        timeout=300,
    )
    (wheel,) = dist.glob("budgetplan-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    expected = {f"budgetplan/device_profiles/{p.name}" for p in profiles_dir().glob("*.yaml")}
    assert expected and expected <= set(names)

    # a new environment with only the wheel and its YAML reader: `budgetplan devices`
    # needs no torch
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps"]
    subprocess.run([*pip, str(wheel), "pyyaml"], check=True, timeout=300)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = subprocess.run(
        [str(venv / "bin" / "budgetplan"), "devices", "--format", "json"],
        capture_output=True, text=True, cwd=elsewhere, timeout=120, check=True,
    )  # fmt: skip
    assert {d["name"] for d in json.loads(result.stdout)} == {p.stem for p in profiles_dir().glob("*.yaml")}
    where = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import budgetplan.device.profile as d; print(d.profiles_dir())"],
        capture_output=True, text=True, cwd=elsewhere, timeout=120, check=True,
    )  # fmt: skip
    assert where.stdout.strip().startswith(str(venv))
