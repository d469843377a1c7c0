from pathlib import Path

import pytest

from edgekit.errors import EdgeError
from edgekit.resources import config_file, shipped_configs, summary
from edgekit.train.config import TrainConfig, build_config, parse_set


def test_defaults_live_in_the_dataclass():
    cfg = build_config(None, {})
    assert cfg == TrainConfig()


def test_yaml_then_cli_override(tmp_path: Path):
    f = tmp_path / "c.yaml"
    f.write_text("preset: mobilenet_v2\nepochs: 3\nlr: 0.01\n")
    cfg = build_config(f, {"epochs": 7, "lr": None})
    assert (cfg.preset, cfg.epochs, cfg.lr) == ("mobilenet_v2", 7, 0.01)


def test_unknown_key_is_rejected_with_a_suggestion(tmp_path: Path):
    f = tmp_path / "c.yaml"
    f.write_text("learning_rate: 0.1\nbatchsize: 3\n")
    with pytest.raises(EdgeError, match="unknown config key 'learning_rate'"):
        build_config(f, {})
    f.write_text("batchsize: 3\n")
    with pytest.raises(EdgeError, match="Did you mean 'batch_size'"):
        build_config(f, {})


def test_wrong_types_and_ranges_are_one_sentence(tmp_path: Path):
    with pytest.raises(EdgeError, match="not a valid int"):
        build_config(None, {"epochs": "many"})
    with pytest.raises(EdgeError, match="val_fraction"):
        build_config(None, {"val_fraction": 1.5})
    with pytest.raises(EdgeError, match="optimizer"):
        build_config(None, {"optimizer": "adamw"})


def test_set_values_parse_as_yaml_scalars():
    assert parse_set(["lr=1e-3", "augment=false", "input-size=96", "weights=null"]) == {
        "lr": 1e-3, "augment": False, "input_size": 96, "weights": None}
    with pytest.raises(EdgeError, match="key=value"):
        parse_set(["lr"])


def test_shipped_configs_are_valid():
    configs = shipped_configs()
    assert {"demo", "resnet8", "mobilenet_v2_finetune"} <= set(configs)
    for path in configs.values():
        build_config(path, {})
        assert summary(path).endswith(".") and len(summary(path)) < 140, (path, summary(path))


def test_configs_are_named_by_preset_and_a_path_still_works(tmp_path: Path, monkeypatch):
    shipped = shipped_configs()
    assert config_file("resnet8") == shipped["resnet8"]
    monkeypatch.chdir(tmp_path)
    assert config_file("configs/demo.yaml") == shipped["demo"]   # as commands written before the move say
    own = tmp_path / "mine.yaml"
    own.write_text("preset: resnet8\n")
    assert config_file(str(own)) == own and config_file("mine.yaml") == Path("mine.yaml")
    with pytest.raises(EdgeError, match="no config named 'resnet9'.*Did you mean 'resnet8'"):
        config_file("resnet9")


def test_bad_yaml_file(tmp_path: Path):
    f = tmp_path / "c.yaml"
    f.write_text("epochs: [1,\n")
    with pytest.raises(EdgeError, match="not valid YAML"):
        build_config(f, {})
    with pytest.raises(EdgeError, match="does not exist"):
        build_config(tmp_path / "nope.yaml", {})


def test_precision_auto_takes_bfloat16_only_for_from_scratch_nets_with_bfloat16_instructions(monkeypatch):
    from edgekit import hardware
    from edgekit.train import precision
    # a CPU whose oneDNN runs bfloat16, whatever this machine is (EDGE_CPU=avx2 would refuse it: test_hardware.py)
    zen4 = "flags\t: avx2 avx512f avx512bw avx512_vnni avx512_bf16\n"
    monkeypatch.setattr(hardware, "current", lambda: hardware.choose(hardware.detect(zen4, {}, "x86_64"), {}))
    monkeypatch.setattr(precision, "bfloat16_units", lambda: "AMX")
    assert precision.choose("auto", from_scratch=True)[0] == "bfloat16"
    assert precision.choose("auto", from_scratch=False)[0] == "float32"
    assert precision.choose("auto", from_scratch=True, gpus=1)[0] == "float32"
    monkeypatch.setattr(precision, "bfloat16_units", lambda: "AVX-512 BF16")
    assert precision.choose("auto", from_scratch=True) == ("bfloat16", "this CPU has AVX-512 BF16 bfloat16 instructions")
    monkeypatch.setattr(precision, "bfloat16_units", lambda: None)
    assert precision.choose("auto", from_scratch=True) == ("float32", "this CPU has no bfloat16 instructions (AMX or AVX-512 BF16)")
    assert precision.choose("bfloat16", from_scratch=True)[0] == "bfloat16"  # asked for: emulated, but honoured
    with pytest.raises(EdgeError, match="from-scratch presets"):
        precision.choose("bfloat16", from_scratch=False)
    with pytest.raises(EdgeError, match="precision must be one of auto, float32, bfloat16.*Did you mean 'bfloat16'"):
        build_config(None, {"precision": "bfloat"})


def test_time_budget_reserve_must_fit_inside_the_budget():
    assert build_config(None, {"time_budget": 4.75, "time_budget_reserve": 55}).time_budget_reserve == 55
    assert build_config(None, {"time_budget": 0, "time_budget_reserve": 55}).time_budget == 0  # no budget: unused
    with pytest.raises(EdgeError, match="time_budget_reserve must be seconds, fewer than time_budget holds"):
        build_config(None, {"time_budget": 1, "time_budget_reserve": 90})
    with pytest.raises(EdgeError, match="time_budget_reserve"):
        build_config(None, {"time_budget": 1, "time_budget_reserve": -1})
