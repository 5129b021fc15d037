"""The command line end to end, in fresh processes, as a user runs it."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from budgetplan.device.profile import profiles_dir

from .helpers.cli import imported_by, run_cli


def _clean_failure(result, *words):
    """Exit status 2, one line on stderr that says what to change, no traceback."""
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("budgetplan: error:"), result.stderr
    for word in words:
        assert word in lines[0]
    return lines[0]


@pytest.mark.slow
def test_solve_default_table():
    result = run_cli("solve", "--device", "cortex-m7")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.startswith("mobilenet_v2(width_mult=0.35, num_classes=10), input 3x128x128, batch 1, on cortex-m7")
    assert "classifier.1" in out and "1280/1280" in out
    assert "of 256.0 KB budget" in out
    assert "HiGHS optimal" in out


@pytest.mark.slow
def test_solve_json_and_plan_file(tmp_path):
    out = tmp_path / "plan.yaml"
    result = run_cli("solve", "--device", "stm32f746", "--budget", "300KB", "--out", str(out), "--format", "json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    for key in ("device", "budget_bytes", "predicted_bytes", "status", "solve_seconds", "objective", "layers"):
        assert key in data
    assert data["device"] == "cortex-m7" and data["budget_bytes"] == 300 * 1024
    assert data["predicted_bytes"] <= data["budget_bytes"] and data["status"] == "optimal"
    for layer in data["layers"]:
        for key in ("name", "update", "channels", "total_channels", "activation_bytes", "weight_bytes", "macs"):
            assert key in layer
        assert layer["update"] in ("none", "bias", "weight")
        assert 0 <= layer["channels"] <= layer["total_channels"]
    assert yaml.safe_load(out.read_text())["layers"] == data["layers"]
    shown = run_cli("show", str(out), "--format", "json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout) == data
    table = run_cli("show", str(out))
    assert "of 300.0 KB budget" in table.stdout


def test_failed_solve_leaves_the_old_plan(tmp_path):
    out = tmp_path / "plan.yaml"
    out.write_text("the user's old plan\n")
    result = run_cli("solve", "--device", "cortex-m7", "--budget", "10KB", "--out", str(out))
    line = _clean_failure(result, "smallest budget", "--budget 77KB")
    assert "10.0 KB" in line
    assert out.read_text() == "the user's old plan\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plan.yaml"]


@pytest.mark.parametrize("device", ["cortex-m4", "nrf52840", "rp2040"])
def test_small_boards_train_with_a_patch_stage(device):
    result = run_cli("solve", "--device", device, "--format", "json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["predicted_bytes"] <= data["budget_bytes"]
    assert data["predicted"]["patch_grid"] > 1 and data["device_profile"]["executor"] == "patch"


@pytest.mark.slow
def test_infeasible_names_what_would_fit():
    """Run whole, rp2040's budget is too small: the message gives the smallest budget as
    it is, with a patch stage, and at a smaller input."""
    result = run_cli("solve", "--device", "rp2040", "--executor", "inplace-dw")
    line = _clean_failure(result, "--budget 237KB", "--executor patch) it is 76.5 KB", "--input-size 96x96) it is")
    # each figure solves: the smaller input at its own smallest budget
    smaller = float(line.rsplit("it is ", 1)[1].split()[0])
    ok = run_cli("solve", "--device", "rp2040", "--executor", "inplace-dw", "--input-size", "96x96",
                 "--budget", f"{smaller + 0.5}KB")  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert run_cli("solve", "--device", "rp2040", "--executor", "bogus").returncode == 2


@pytest.mark.slow
def test_budget_beyond_the_device_is_flagged():
    result = run_cli("solve", "--budget", "1MB")
    assert result.returncode == 0, result.stderr
    assert "warning: --budget is above cortex-m7's free SRAM (262144 bytes)" in result.stderr
    assert "this plan will not run on it" in result.stdout
    assert "will not run" not in run_cli("solve", "--budget", "250KB").stdout


def test_devices():
    result = run_cli("devices", "--format", "json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    names = {d["name"] for d in data}
    assert names == {p.stem for p in profiles_dir().glob("*.yaml")}
    m7 = next(d for d in data if d["name"] == "cortex-m7")
    assert (m7["sram_bytes"], m7["flash_bytes"], m7["budget_bytes"]) == (327680, 1048576, 262144)
    assert "stm32f746" in m7["aliases"]
    table = run_cli("devices").stdout
    assert all(name in table for name in names)


def test_profile_lists_the_patch_stages():
    planned = run_cli("profile", "--device", "rp2040").stdout
    assert "patch stages (planned): before features.2.conv.0.0 2x2:" in planned
    offered = run_cli("profile", "--device", "rp2040", "--executor", "inplace-dw").stdout
    assert "patch stages (with --executor patch)" in offered
    assert "patch stages" not in run_cli("profile", "--device", "raspberry-pi-4").stdout


def test_profile_json():
    result = run_cli("profile", "--model", "resnet18", "--input-size", "64", "--format", "json")
    assert result.returncode == 0, result.stderr
    layers = json.loads(result.stdout)
    assert len(layers) == 21
    keys = (
        "name", "kind", "in_channels", "out_channels", "kernel_size", "groups", "input_hw", "output_hw",
        "macs", "weight_elements_per_channel", "activation_elements_per_channel",
    )  # fmt: skip
    for layer in layers:
        assert all(key in layer for key in keys)
    first = layers[0]
    assert (first["name"], first["kernel_size"], first["input_hw"], first["output_hw"]) == (
        "conv1", [7, 7], [64, 64], [32, 32],
    )  # fmt: skip
    assert first["macs"] == 64 * 3 * 49 * 32 * 32


def test_user_profile_path(tmp_path):
    data = yaml.safe_load((profiles_dir() / "cortex-m7.yaml").read_text())
    data.update(name="my-board", aliases=[], sram="512KB", budget="400KB")
    path = tmp_path / "my_board.yaml"
    path.write_text(yaml.safe_dump(data))
    result = run_cli("solve", "--device", str(path), "--format", "json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["budget_bytes"] == 400 * 1024


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["solve", "--device", "cortex-m99"], ["unknown device 'cortex-m99'", "cortex-m7", "rp2040"]),
        (["solve", "--model", "mobilenet_v9"], ["unknown model 'mobilenet_v9'"]),
        (["solve", "--model", "resnet18", "--width-mult", "0.5"], ["--width-mult"]),
        (["solve", "--input-size", "1x128x128"], ["rejects an input of shape 1x1x128x128"]),
        (["solve", "--model", "nowhere.models:build"], ["cannot import nowhere.models"]),
        (["show", "missing-plan.yaml"], ["missing-plan.yaml", "cannot read"]),
    ],
)
def test_user_errors(args, words):
    _clean_failure(run_cli(*args), *words)


def test_bad_profile_file(tmp_path):
    path = tmp_path / "board.yaml"
    data = yaml.safe_load((profiles_dir() / "cortex-m7.yaml").read_text())
    data["flash"] = "1 furlong"
    path.write_text(yaml.safe_dump(data))
    _clean_failure(run_cli("solve", "--device", str(path)), str(path), "field 'flash'")


def test_bad_flag_value():
    result = run_cli("solve", "--budget", "lots")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "--budget" in result.stderr


@pytest.mark.slow
def test_console_script_is_installed():
    script = Path(sys.executable).parent / "budgetplan"
    assert script.exists()
    result = subprocess.run([str(script), "devices"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "cortex-m7" in result.stdout


def test_native_output_stays_off_the_streams(capfd):
    """What native code writes on descriptors 1 and 2 (HiGHS's banner) is held back."""
    import ctypes
    import os

    from budgetplan.planning.solver_output import native_output_to

    libc = ctypes.CDLL(None)
    with native_output_to():
        os.write(1, b"fd banner\n")
        libc.printf(b"stdio banner\n")  # buffered by C stdio: flushed into the capture
        os.write(2, b"fd complaint\n")
    print("the output")
    out, err = capfd.readouterr()
    assert out == "the output\n" and err == ""
    with native_output_to(echo=True):
        os.write(1, b"solver log\n")
    out, err = capfd.readouterr()
    assert out == "" and err == "solver log\n"


def _json_files(tmp: Path) -> None:
    """The files the commands of ``_json_commands`` read."""
    from budgetplan import cli

    assert cli.main(["solve", "--out", str(tmp / "plan.yaml")]) == 0
    assert cli.main(["solve", "--budget", "300KB", "--out", str(tmp / "other.yaml")]) == 0
    (tmp / "board.yaml").write_text((profiles_dir() / "cortex-m7.yaml").read_text())


def _json_commands(tmp: Path) -> list[list[str]]:
    """Every command that prints data; the last three read files (``_json_files``)."""
    plan, other, profile = tmp / "plan.yaml", tmp / "other.yaml", tmp / "board.yaml"
    return [
        ["solve", "--budget", "240KB"],
        ["sweep", "--budgets", "200KB,256KB", "--quiet"],  # one infeasible row
        ["profile", "--model", "resnet18", "--input-size", "32"],
        ["devices"],
        ["devices", "--show", "cortex-m7"],
        ["validate", str(profile)],
        ["show", str(plan)],
        ["compare", str(plan), str(other)],
    ]


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_every_command_prints_parseable_data_in_process(tmp_path, capfd, fmt):
    from budgetplan import cli

    _json_files(tmp_path)
    commands = _json_commands(tmp_path)
    capfd.readouterr()
    for args in [*commands, ["export", str(tmp_path / "plan.yaml"), "--format", "json"]]:
        chosen = args if args[0] == "export" else [*args, "--format", fmt]
        assert cli.main(chosen) == 0, chosen
        out = capfd.readouterr().out
        assert (json.loads(out) if fmt == "json" or args[0] == "export" else yaml.safe_load(out)) is not None


@pytest.mark.slow
@pytest.mark.parametrize("index", range(8))
def test_every_command_prints_parseable_json_through_the_console_script(tmp_path, index):
    """Fresh processes: a solver announces itself once per process, so only they can show it."""
    args = _json_commands(tmp_path)[index]
    if any(str(tmp_path) in word for word in args):
        _json_files(tmp_path)
    script = Path(sys.executable).parent / "budgetplan"
    result = subprocess.run([str(script), *args, "--format", "json"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, (args, result.stderr)
    json.loads(result.stdout)


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["importance", "--steps", "-1", "--out", "x.yaml"], "--steps: '-1'"),
        (["importance", "--batch-size", "0", "--out", "x.yaml"], "--batch-size: '0'"),
        (["sweep", "--budgets", "64KB:1MB:100000"], "100000 budgets"),
        (["sweep", "--budgets", "64KB:1MB:3", "--time-limit", "nan"], "--time-limit: 'nan'"),
        (["solve", "--width-mult", "0"], "--width-mult: '0'"),
        (["solve", "--width-mult", "-1"], "--width-mult: '-1'"),
        (["solve", "--epochs", "many"], "--epochs: 'many'"),
    ],
)
def test_numbers_out_of_range_are_refused_in_one_line(capsys, args, words):
    from budgetplan import cli

    try:
        code = cli.main(args)
    except SystemExit as stop:  # argparse refuses a flag's value by exiting
        code = stop.code
    assert code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("budgetplan: error:") and words in err, err


SCHEMES = Path(__file__).resolve().parent.parent / "examples" / "tiny-training"


def test_import_scheme_writes_the_plan_and_exports_it_back(tmp_path):
    out = tmp_path / "plan.yaml"
    scheme = SCHEMES / "mbv2-w0.35-99kb.yaml"
    result = run_cli("import-scheme", str(scheme), "--device", "cortex-m7", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "Sparse Update accounting" in result.stdout and "training memory" in result.stdout
    assert f"tiny-training backward_config from {scheme}" in result.stdout
    assert f"plan written to {out}" in result.stdout
    plan = yaml.safe_load(out.read_text())
    assert plan["status"] == "imported" and plan["options"]["sampler"] == "magnitude"
    assert {layer["name"] for layer in plan["layers"] if layer["update"] != "none"} >= {"classifier.1"}

    exported = run_cli("export", str(out), "--format", "tiny-training")
    assert exported.returncode == 0, exported.stderr
    assert exported.stdout.startswith("# Sparse Update backward_config")
    config = yaml.safe_load(exported.stdout)["backward_config"]
    published = yaml.safe_load(scheme.read_text())["backward_config"]
    for key in ("n_bias_update", "weight_select_criteria"):
        assert config[key] == published[key], key
    for key in ("manual_weight_idx", "weight_update_ratio"):  # "-"-joined, as the training script reads them
        assert str(config[key]) == str(published[key]), key
    written = tmp_path / "scheme.yaml"
    assert run_cli("export", str(out), "--format", "tiny-training", "--out", str(written)).returncode == 0
    assert written.read_text() == exported.stdout

    shown = run_cli("show", str(out), "--format", "json")
    data = json.loads(shown.stdout)
    assert data["training_memory_accounting"] == "budgetplan"
    assert data["training_memory_bytes"] == data["predicted"]["training_memory_bytes"]
    assert 99 * 1024 < data["training_memory_by_accounting"]["sparse-update"] < data["training_memory_bytes"]


def test_import_scheme_json_under_the_sparse_update_accounting(tmp_path):
    path = tmp_path / "scheme.json"
    path.write_text(json.dumps({"n_bias_update": 3, "manual_weight_idx": "49-51", "weight_update_ratio": "0.5-1"}))
    result = run_cli("import-scheme", str(path), "--accounting", "sparse-update", "--format", "json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["training_memory_bytes"] == data["training_memory_by_accounting"]["sparse-update"]
    channels = {layer["name"]: layer["channels"] for layer in data["layers"] if layer["update"] != "none"}
    assert channels == {
        "features.17.conv.1.0": 168,
        "features.17.conv.2": 0,
        "features.18.0": 112,
        "classifier.1": 1280,
    }


@pytest.mark.slow
def test_solve_with_the_sparse_update_accounting_prints_json(tmp_path):
    out = tmp_path / "plan.yaml"
    result = run_cli("solve", "--accounting", "sparse-update", "--format", "json", "--out", str(out))
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["training_memory_accounting"] == "sparse-update"
    assert data["training_memory_bytes"] == data["training_memory_by_accounting"]["sparse-update"] > 0
    assert data["training_memory_by_accounting"]["budgetplan"] == data["predicted"]["training_memory_bytes"]
    table = run_cli("show", str(out)).stdout
    assert "the training memory this plan reports" in table and "training memory reported as Sparse Update" in table


@pytest.mark.slow
def test_the_cap_holds_the_accounting_it_names():
    """At a 99 KB cap, each accounting's figure is within it, and the two plans differ."""
    plans = {}
    for accounting in ("budgetplan", "sparse-update"):
        result = run_cli("solve", "--training-memory", "99KB", "--accounting", accounting, "--format", "json")
        assert result.returncode == 0, result.stderr
        plans[accounting] = json.loads(result.stdout)
        assert plans[accounting]["training_memory_by_accounting"][accounting] <= 99 * 1024
    # Sparse Update counts the head's weights at 0 bits: more fits under its cap
    assert plans["sparse-update"]["training_memory_by_accounting"]["budgetplan"] > 99 * 1024
    assert plans["sparse-update"]["objective"] >= plans["budgetplan"]["objective"]


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("n_bias_update: 2\nn_weight_update: 1\nlr: 0.1\n", ["unknown key 'lr'", "accepted keys"]),
        ("n_bias_update: 2\nmanual_weight_idx: [70]\n", ["field 'manual_weight_idx'", "index 70"]),
        ("n_bias_update: 2\nmanual_weight_idx: [30]\n", ["field 'manual_weight_idx'", "not among the last 2"]),
        ("n_bias_update: [2\n", ["not valid YAML"]),
    ],
)
def test_a_bad_scheme_fails_in_one_line_and_leaves_the_old_plan(tmp_path, text, words):
    path = tmp_path / "scheme.yaml"
    path.write_text(text)
    out = tmp_path / "plan.yaml"
    out.write_text("the user's old plan\n")
    _clean_failure(run_cli("import-scheme", str(path), "--out", str(out)), str(path), *words)
    assert out.read_text() == "the user's old plan\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plan.yaml", "scheme.yaml"]


def test_export_refuses_a_plan_no_scheme_expresses(tmp_path):
    out = tmp_path / "plan.yaml"
    assert run_cli("import-scheme", str(SCHEMES / "mbv2-w0.35-49kb.yaml"), "--out", str(out)).returncode == 0
    data = yaml.safe_load(out.read_text())
    first = data["layers"][0]
    first.update(bias=True, update="bias")  # a bias far before the others: a gap
    out.write_text(yaml.safe_dump(data, sort_keys=False))
    target = tmp_path / "scheme.yaml"
    target.write_text("old\n")
    result = run_cli("export", str(out), "--format", "tiny-training", "--out", str(target))
    _clean_failure(result, "convolution 0 (features.0.0) trains its bias", "the last n")
    assert target.read_text() == "old\n"


@pytest.mark.slow
@pytest.mark.parametrize("command", ["devices", "validate {profile}", "show {plan}", "compare {plan} {plan}"])
def test_commands_on_files_alone_import_no_torch(tmp_path, command):
    plan = tmp_path / "plan.yaml"
    assert run_cli("solve", "--budget", "300KB", "--out", str(plan)).returncode == 0
    args = command.format(profile=profiles_dir() / "cortex-m7.yaml", plan=plan).split()
    assert imported_by(args, "torch") == []
