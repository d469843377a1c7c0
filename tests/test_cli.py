"""The `edge` CLI: exit codes and one-line messages, through typer's CliRunner."""
import pytest
from typer.testing import CliRunner

from edgekit.cli import app

pytestmark = pytest.mark.tf  # trains, converts or loads models with TensorFlow

runner = CliRunner()


def run(*args):
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


def test_help_explains_options_with_defaults():
    code, out = run("train", "--help")
    assert code == 0
    for option in ("--config", "--data", "--out", "--preset", "--weights", "--hub", "--input-size", "--resume",
                   "--skip-bad", "--set"):
        assert option in out
    assert "Default: resnet8" in out and "Default: cifar10" in out


@pytest.mark.parametrize("args, message", [
    (["--preset", "mobilenetv2"], "unknown preset 'mobilenetv2'"),
    (["--set", "learning_rate=0.1"], "unknown config key 'learning_rate'"),
    (["--set", "batch_size=0"], "batch_size must be at least 1"),  # a --set key that also has an option
    (["--optimizer", "adamw"], "optimizer must be"),
    (["--data", "/no/such/dir"], "does not exist"),
    (["--resume"], "--resume needs --out"),
])
def test_bad_input_is_one_line_and_exit_2(args, message, tmp_path):
    code, out = run("train", "--out", str(tmp_path / "r"), *args) if args != ["--resume"] else run("train", *args)
    assert code == 2, out
    assert message in out and "Traceback" not in out


def test_one_class_folder(tmp_path):
    from PIL import Image
    d = tmp_path / "d" / "train" / "only"
    d.mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(d / "a.png")
    Image.new("RGB", (8, 8)).save(d / "b.png")
    code, out = run("train", "--data", str(tmp_path / "d"), "--out", str(tmp_path / "r"))
    assert code == 2 and "at least two" in out


def test_existing_run_needs_resume(tmp_path):
    (tmp_path / "r" / "checkpoints").mkdir(parents=True)
    code, out = run("train", "--out", str(tmp_path / "r"))
    assert code == 2 and "--resume" in out


def test_evaluate_a_directory_without_a_model(tmp_path):
    code, out = run("evaluate", str(tmp_path))
    assert code == 2 and "no model.keras" in out


def test_presets_table():
    code, out = run("presets")
    assert code == 0 and "mobilenet_v3_small" in out and "resnet8" in out


def test_summary_of_no_runs(tmp_path):
    code, out = run("summary", str(tmp_path))
    assert code == 2 and "no finished runs" in out


@pytest.mark.parametrize("command,config,renamed", [
    ("convert", "edgekit.convert.config:ConvertConfig", {}),
    ("bench", "edgekit.benchmarks.config:BenchConfig", {"host": "hosts", "hosts": "hosts_file"}),
    ("pack", "edgekit.deploy.config:PackConfig", {}),
    ("select", "edgekit.benchmarks.select:Budget", {"max_accuracy_drop": "max_accuracy_drop_pp", "max_size": "max_size_mb",
                                                  "max_ram": "max_ram_mb", "min_accuracy": "min_accuracy_pct"}),
])
def test_every_option_default_is_the_config_s(command, config, renamed):
    """A default lives in the config dataclass only: each option of the command that sets a config field starts
    from that field's default (or from None: "the config's default" when the option is not given)."""
    import dataclasses
    import importlib
    import typer.main
    module, name = config.split(":")
    fields = {f.name: f for f in dataclasses.fields(getattr(importlib.import_module(module), name))}
    params = typer.main.get_command(app).commands[command].params
    checked = 0
    for param in params:
        field = fields.get(renamed.get(param.name, param.name))
        if field is None or param.default is None:
            continue
        want = field.default if field.default is not dataclasses.MISSING else field.default_factory()
        got = param.default
        if isinstance(want, tuple):   # a repeatable option's list; --batch 1,8 is read as the tuple (1, 8)
            got = tuple(got) if isinstance(got, (list, tuple)) else tuple(int(v) for v in str(got).split(","))
        assert got == want, (command, param.name, got, want)
        checked += 1
    assert checked >= 2, f"{command}: no option was compared"
