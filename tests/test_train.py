"""End to end on tiny real image files: train → run directory → evaluate, cache, resume, CLI errors."""
import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from typer.testing import CliRunner

from edgekit.cli import app
from edgekit.train.config import build_config
from edgekit.train.evaluate import evaluate
from edgekit.train.pipeline import to_model_input
from edgekit.train.run import train
from edgekit_runtime import PreprocessSpec, load_rgb, resize_rgb
from testdata import make_hub_module

pytestmark = pytest.mark.tf  # trains, converts or loads models with TensorFlow

RUN_FILES = {"model.keras", "labels.txt", "preprocess.json", "config.yaml", "run.json", "metrics.json",
             "history.json", "training_curves.png", "confusion_matrix.png"}


def cfg(data, **kw):
    base = dict(data=str(data), batch_size=16, epochs=2, early_stopping_patience=0, seed=7)
    base.update(kw)
    return build_config(None, base)


def test_resnet8_run_directory_and_evaluate(tiny_folder, tmp_path):
    run = train(cfg(tiny_folder, preset="resnet8", epochs=4, lr=0.01), tmp_path / "run")
    assert RUN_FILES <= {p.name for p in run.iterdir()}
    assert (run / "labels.txt").read_text().split() == ["blue", "green", "red"]
    spec = PreprocessSpec.load(run / "preprocess.json")
    assert spec.size == (32, 32) and spec.scale[0] == pytest.approx(1 / 255) and spec.channel_order == "RGB"
    metrics = json.loads((run / "metrics.json").read_text())
    test = metrics["test"]
    assert test["images"] == 18 and len(test["confusion_matrix"]) == 3
    assert set(test["per_class"]["red"]) == {"precision", "recall", "f1", "support"}
    assert metrics["train_seconds"] > 0 and metrics["inference_images_per_second"] > 0
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "complete" and info["versions"]["tf_keras"].startswith("2.")
    assert len(info["data"]["hash"]) == 64
    for png in ("training_curves.png", "confusion_matrix.png"):
        assert Image.open(run / png).size[0] > 300
    again = evaluate(run)
    assert again["top1"] == pytest.approx(test["top1"]) and again["confusion_matrix"] == test["confusion_matrix"]
    result = CliRunner().invoke(app, ["summary", str(run.parent), "--markdown"])
    assert result.exit_code == 0 and f"{test['top1']:.2%}" in result.output and "32x32" in result.output


def test_transfer_with_feature_cache_and_fine_tune(tiny_folder, tmp_path, cache_dir):
    kw = dict(preset="mobilenet_v2", weights="none", alpha=0.35, input_size=32, epochs=3, fine_tune_epochs=1,
              fine_tune_layers=20, lr=0.01)
    first = train(cfg(tiny_folder, **kw), tmp_path / "a")
    m1 = json.loads((first / "metrics.json").read_text())
    assert m1["feature_cache_hit"] is False and set(m1["phases"]) == {"head", "fine_tune"}
    assert len(list((cache_dir / "features").iterdir())) == 1
    second = train(cfg(tiny_folder, **kw), tmp_path / "b")
    m2 = json.loads((second / "metrics.json").read_text())
    assert m2["feature_cache_hit"] is True
    # a different input size is a different cache entry
    train(cfg(tiny_folder, **{**kw, "input_size": 48, "fine_tune_epochs": 0}), tmp_path / "c")
    assert len(list((cache_dir / "features").iterdir())) == 2


def test_hub_module_backbone_trains_and_evaluates(tiny_folder, tmp_path, cache_dir):
    module = make_hub_module(tmp_path / "hubmodule")
    run = train(cfg(tiny_folder, hub=str(module), input_size=32, epochs=2, lr=0.05), tmp_path / "run")
    spec = PreprocessSpec.load(run / "preprocess.json")
    assert spec.offset == (0.0, 0.0, 0.0) and spec.scale[0] == pytest.approx(1 / 255)
    assert evaluate(run)["images"] == 18


def test_resnet50_trains_a_few_steps(tiny_folder, tmp_path, cache_dir):
    run = train(cfg(tiny_folder, preset="resnet50", weights="none", input_size=32, epochs=1, fine_tune_epochs=1,
                    fine_tune_layers=5, limit_per_class=6), tmp_path / "run")
    spec = PreprocessSpec.load(run / "preprocess.json")
    assert spec.channel_order == "BGR" and spec.offset[0] == pytest.approx(-103.939)
    assert json.loads((run / "metrics.json").read_text())["phases"]["fine_tune"]["epochs"] == 1


def test_training_pipeline_matches_runtime_preprocessing(tiny_folder):
    """The tf.data resize+normalise and the runtime's Pillow path agree within one uint8 step."""
    spec = PreprocessSpec(height=96, width=96, scale=(1 / 127.5,) * 3, offset=(-1.0,) * 3)
    files = sorted((tiny_folder / "test").rglob("*.*"))
    stored = np.stack([np.asarray(load_rgb(str(f)), np.uint8) for f in files])  # 32x32, as training stores them
    train_side = to_model_input(tf.constant(stored), spec).numpy()
    runtime_side = np.stack([spec.normalize(resize_rgb(load_rgb(str(f)), spec.size)) for f in files])
    assert np.abs(train_side - runtime_side).max() <= spec.scale[0] * 1.0 + 1e-6


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "kill"])
def test_interrupt_then_resume(stop, tiny_folder, tmp_path, cache_dir):
    """A real Ctrl-C or kill mid-run leaves a resumable run; --resume finishes it with every epoch accounted for."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "edgekit", "train", "--data", str(tiny_folder), "--out", str(out),
           "--preset", "resnet8", "--epochs", "8", "--batch-size", "4", "--set", "early_stopping_patience=0"]
    # A job started in the background (`cmd &`, nohup) inherits SIGINT ignored, and Python then never raises
    # KeyboardInterrupt; give the child the default disposition a foreground command at a terminal has.
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    state = out / "checkpoints" / "train" / "state.json"
    deadline = time.time() + 240
    while time.time() < deadline and not state.exists():
        time.sleep(0.2)
    assert state.exists(), proc.communicate()[0] if proc.poll() is not None else "no checkpoint in time"
    proc.send_signal(stop)
    output = proc.communicate(timeout=120)[0]
    assert proc.returncode == 130, output
    assert "--resume" in output and "Traceback" not in output
    done = json.loads(state.read_text())["epochs_done"]
    assert 1 <= done < 8 and not (out / "model.keras").exists()
    result = CliRunner().invoke(app, ["train", "--out", str(out), "--resume"])
    assert result.exit_code == 0, result.output
    history = json.loads((out / "history.json").read_text())["train"]
    assert [h["epoch"] for h in history] == list(range(1, 9))


def test_evaluate_on_other_data_with_a_subset_of_classes(tiny_folder, tmp_path):
    import shutil
    run = train(cfg(tiny_folder, preset="resnet8", epochs=1), tmp_path / "run")
    other = tmp_path / "other"
    for c in ("blue", "red"):
        shutil.copytree(tiny_folder / "test" / c, other / "test" / c)
        shutil.copytree(tiny_folder / "train" / c, other / "train" / c)
    report = evaluate(run, str(other))
    assert report["images"] == 12 and report["data"]["source"] == str(other)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test"]["images"] == 18 and len(metrics["evaluations"]) == 1


def test_a_cifar10_run_remembers_its_archive_without_the_environment(tiny_tar, tmp_path, monkeypatch):
    """Trained with data: cifar10 through $EDGE_CIFAR10; evaluate/convert in a shell without it must not download."""
    import yaml
    from edgekit.train.rundir import read_finished_run
    monkeypatch.setenv("EDGE_CIFAR10", str(tiny_tar))
    run = train(build_config(None, dict(data="cifar10", preset="resnet8", epochs=1, batch_size=8,
                                        early_stopping_patience=0, seed=7)), tmp_path / "run")
    assert yaml.safe_load((run / "config.yaml").read_text())["data"] == "cifar10"
    monkeypatch.delenv("EDGE_CIFAR10")
    assert read_finished_run(run)[0].data == str(tiny_tar)
    report = evaluate(run)
    assert report["images"] == 18 and report["data"]["source"] == str(tiny_tar)
    moved = tmp_path / "gone.tar.gz"
    tiny_tar.rename(moved)
    try:  # the archive is gone: the configured name is left as it was (a user's machine downloads)
        assert read_finished_run(run)[0].data == "cifar10"
    finally:
        moved.rename(tiny_tar)
