"""Generated profiles, budgets and plan files, valid and broken, through the command line.

Whatever the input: exit 0 with a plan within its budget (or a faithful view of a valid
plan), or exit 2 with one line on stderr and no traceback, and the old output file as it was.
"""

from __future__ import annotations

import copy
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from budgetplan import cli
from budgetplan.device.profile import profiles_dir

from .helpers.disk import full_disk

SETTINGS = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
MODEL = ["--model", "resnet18", "--input-size", "32"]  # 21 layers: quick to trace and solve
OLD = "the user's old file\n"

sizes = st.builds(lambda n, unit: f"{n}{unit}", st.integers(1, 4096), st.sampled_from(["KB", "MB", "B", " KiB"]))
junk = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**15), 10**15),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=10),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
    st.sampled_from(["-4KB", "nan", "inf", "12 furlongs", "1e400", "0", "216MHz", "0.5 MiB", "layer", "sram"]),
)
PROFILE_FIELDS = {
    "sram": sizes,
    "flash": sizes,
    "reserved": sizes,
    "budget": sizes,
    "clock": st.sampled_from(["216MHz", "1.5GHz", "100"]),
    "executor": st.sampled_from(["layer", "inplace-dw"]),
    "frozen_weights": st.sampled_from(["flash", "sram"]),
    "max_step_latency": st.sampled_from([None, "2s", "500ms"]),
}


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = cli.main(args)
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 2
    out, err = capsys.readouterr()
    return code, out, err


def _one_clean_line(err: str) -> None:
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("budgetplan: error:"), err


def base_profile() -> dict[str, Any]:
    """cortex-m7 with flash enough for the test model (resnet18 needs 10.7 MB)."""
    data: dict[str, Any] = yaml.safe_load((profiles_dir() / "cortex-m7.yaml").read_text())
    data.update(name="fuzz-board", aliases=[], flash="16MB")
    return data


@st.composite
def profile_texts(draw: st.DrawFn) -> str:
    data = base_profile()
    for field in draw(st.lists(st.sampled_from([*PROFILE_FIELDS, "bits", "compute", "name"]), max_size=4)):
        how = draw(st.sampled_from(["valid", "junk", "delete"]))
        if how == "delete":
            data.pop(field, None)
        elif how == "junk":
            data[field] = draw(junk)
        elif field == "bits":
            bits = data["bits"] if isinstance(data.get("bits"), dict) else {}
            key = draw(st.sampled_from(sorted(bits) or ["weight"]))
            data["bits"] = {**bits, key: draw(st.sampled_from([0, 1, 4, 8, 16, 32, 3]))}
        elif field in PROFILE_FIELDS:
            data[field] = draw(PROFILE_FIELDS[field])
    if draw(st.integers(0, 9)) == 0:
        data[draw(st.text(min_size=1, max_size=6))] = 1  # an unknown field
    text = yaml.safe_dump(data)
    if draw(st.integers(0, 9)) == 0:
        text = text[: draw(st.integers(0, len(text)))]  # a truncated file
    return text


@pytest.mark.slow
@settings(SETTINGS, max_examples=15)  # each one a solve
@given(profile=profile_texts(), budget=st.one_of(st.none(), sizes, junk.map(str)))
@example(profile=yaml.safe_dump(base_profile()), budget=None).via("the valid profile plans")
@example(profile=yaml.safe_dump({"\x1e": 1, **base_profile()}), budget=None).via("a field named by a line break")
def test_generated_profiles_and_budgets(capsys, profile, budget):
    folder = Path(tempfile.mkdtemp())
    (folder / "board.yaml").write_text(profile)
    out = folder / "plan.yaml"
    out.write_text(OLD)
    args = ["solve", "--device", str(folder / "board.yaml"), *MODEL, "--out", str(out), "--format", "json"]
    if budget is not None:
        args += ["--budget", budget]
    code, stdout, err = _run(args, capsys)
    if code == 0:
        plan = json.loads(stdout)
        assert plan["predicted_bytes"] <= plan["budget_bytes"]
        assert yaml.safe_load(out.read_text())["layers"] == plan["layers"]
    else:
        assert code == 2
        _one_clean_line(err)
        assert out.read_text() == OLD


@pytest.fixture(scope="module")
def plan_data() -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp())
    (folder / "board.yaml").write_text(yaml.safe_dump(base_profile()))
    args = ["solve", "--device", str(folder / "board.yaml"), *MODEL, "--out", str(folder / "plan.yaml")]
    assert cli.main(args) == 0
    return yaml.safe_load((folder / "plan.yaml").read_text())


@st.composite
def plan_edits(draw: st.DrawFn, data: dict[str, Any]) -> dict[str, Any]:
    """A plan file with a few fields replaced by junk or by other valid-looking values."""
    data = copy.deepcopy(data)
    for _ in range(draw(st.integers(1, 3))):
        if draw(st.booleans()):
            layers = data.get("layers")  # an earlier edit may have made it junk, or empty
            layer = draw(st.sampled_from(layers)) if isinstance(layers, list) and layers else None
            if not isinstance(layer, dict):
                continue
            key = draw(st.sampled_from(["channels", "bias", "update", "total_channels", "bias_param", "name"]))
            value = draw(st.one_of(junk, st.integers(-3, 3000), st.sampled_from(["none", "bias", "weight"])))
            target = layer
        else:
            key = draw(st.sampled_from(["layers", "budget_bytes", "batch_size", "input_shape", "device_profile"]))
            value = draw(junk)
            target = data
        if draw(st.integers(0, 4)) == 0:
            target.pop(key, None)
        else:
            target[key] = value
    return data


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore")
@SETTINGS
@given(data=st.data())
def test_generated_plan_files(capsys, plan_data, data):
    edited = data.draw(plan_edits(plan_data))
    folder = Path(tempfile.mkdtemp())
    path, header = folder / "plan.yaml", folder / "plan.h"
    path.write_text(yaml.safe_dump(edited))
    header.write_text(OLD)
    code, stdout, err = _run(["show", str(path), "--format", "json"], capsys)
    if code == 0:
        for layer in json.loads(stdout)["layers"]:
            assert isinstance(layer["channels"], int) and 0 <= layer["channels"] <= layer["total_channels"]
            assert isinstance(layer["bias"], bool)
            assert (layer["update"] == "none") == (not layer["channels"] and not layer["bias"])
    else:
        assert code == 2
        _one_clean_line(err)
    exported, _, export_err = _run(["export", str(path), "--out", str(header)], capsys)
    assert exported == code  # a plan that shows also exports, and the other way round
    if exported == 0:
        assert "#define" in header.read_text()
    else:
        _one_clean_line(export_err)
        assert header.read_text() == OLD


# --- the structure of YAML itself: aliases, nesting, huge scalars ------------------------


@st.composite
def structures(draw: st.DrawFn) -> str:
    """A YAML value as text: nested flow or block collections, alias chains, long scalars,
    numbers in JSON's exponent form."""
    kind = draw(st.sampled_from(["flow", "block", "aliases", "scalar", "number"]))
    depth = draw(st.integers(1, 120))
    if kind == "flow":
        return "[" * depth + draw(st.sampled_from(["", "1", "a: 1"])) + "]" * depth
    if kind == "block":
        return "".join("\n" + "  " * (i + 1) + "- " for i in range(depth)) + "x"
    if kind == "aliases":
        return "&a [1, 2, 3]"  # the alias that refers to it comes in a field after it
    if kind == "scalar":
        return repr("y" * draw(st.integers(1, 300_000)))
    return draw(st.sampled_from(["5e-05", "1e+30", "-2E3", "1e400", "0.5e-3"]))


def _with_structure(data: dict[str, Any], field: str, value: str, alias: bool) -> str:
    """The mapping ``data`` as YAML, with ``field`` written as the text ``value`` (first)."""
    rest = yaml.safe_dump({k: v for k, v in data.items() if k != field}, sort_keys=False)
    return f"{field}: {value}\n{rest}" + ("extra: [*a, *a, *a]\n" if alias else "")


FILE_COMMANDS = {
    "profile": (["validate"], ["name", "sram", "bits", "aliases"]),
    "plan": (["show", "--format", "json"], ["model", "layers", "budget_bytes", "device_profile"]),
    "scheme": (["import-scheme", *MODEL], ["n_bias_update", "weight_select_criteria", "manual_weight_idx"]),
}


@pytest.mark.filterwarnings("ignore")
@settings(SETTINGS, max_examples=30)
@given(kind=st.sampled_from(sorted(FILE_COMMANDS)), value=structures(), data=st.data())
def test_generated_yaml_structures_are_read_or_refused_in_one_line(capsys, plan_data, kind, value, data):
    command, fields = FILE_COMMANDS[kind]
    field = data.draw(st.sampled_from(fields))
    base = {
        "profile": base_profile(),
        "plan": plan_data,
        "scheme": {"n_bias_update": 10, "manual_weight_idx": 48, "weight_update_ratio": 1},
    }[kind]
    folder = Path(tempfile.mkdtemp())
    path = folder / f"{kind}.yaml"
    path.write_text(_with_structure(base, field, value, alias=value.startswith("&")))
    start = time.monotonic()
    code, _, err = _run([command[0], str(path), *command[1:]], capsys)
    assert time.monotonic() - start < 30
    if code != 0:
        assert code == 2
        _one_clean_line(err)
        assert len(err) < 2200
    if value.startswith("&"):
        assert code == 2 and "aliases are not read" in err


# --- plots: any name, a picture of the named format or one line ---------------------------


@pytest.mark.slow
@settings(SETTINGS, max_examples=20)
@given(
    name=st.one_of(
        st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="/\x00"), min_size=1, max_size=12),
        st.builds(
            lambda s, e: s + e, st.text("abc.", min_size=1, max_size=4), st.sampled_from([".png", ".svg", ".PDF"])
        ),
    )
)
@example(name="plot").via("no extension")
@example(name="x.yaml").via("a data extension")
def test_generated_plot_names(capsys, plan_data, name):
    folder = Path(tempfile.mkdtemp())
    plan = folder / "plan.yaml"
    plan.write_text(yaml.safe_dump(plan_data))
    code, _, err = _run(["show", str(plan), "--plot", str(folder / name)], capsys)
    others = sorted(p.name for p in folder.iterdir() if p.name != "plan.yaml")
    if code == 0:
        start = {".png": b"\x89PNG", ".svg": b"<?xml", ".pdf": b"%PDF"}[Path(name).suffix.lower()]
        assert (folder / name).read_bytes().startswith(start)
        assert others == [Path(folder / name).name]  # the name given, nothing beside it
    else:
        assert code == 2
        _one_clean_line(err)
        assert others == []


# --- a disk that fills up at any byte ------------------------------------------------------


@pytest.mark.slow
@settings(SETTINGS, max_examples=12)
@given(
    after=st.integers(0, 200_000),
    output=st.sampled_from([["--out", "plan.yaml"], ["--out", "plan.json"], ["--plot", "plan.png"]]),
)
def test_a_disk_that_fills_up_keeps_the_old_file(capsys, plan_data, after, output):
    folder = Path(tempfile.mkdtemp())
    plan = folder / "plan.yaml"
    plan.write_text(yaml.safe_dump(plan_data))
    target = folder / output[1]
    if target != plan:
        target.write_bytes(b"the old file")
    old = target.read_bytes()
    if output[0] == "--plot":
        args = ["show", str(plan), "--plot", str(target)]
    else:
        args = ["solve", "--budget", "200KB", "--out", str(target)]
    with pytest.MonkeyPatch.context() as patch:
        full_disk(patch, folder, after)
        code, _, err = _run(args, capsys)
    leftovers = sorted(p.name for p in folder.iterdir())
    assert leftovers == sorted({"plan.yaml", target.name})  # no temporary file left
    if code == 0:
        assert target.read_bytes() != old and len(target.read_bytes()) <= after
    else:
        assert code == 2
        _one_clean_line(err)
        assert "No space left on device" in err and target.read_bytes() == old
