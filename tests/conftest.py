"""Shared fixtures: tiny real image data sets (JPEG/PNG files on disk and in archives), no network."""
from __future__ import annotations

import os
import sys
import tarfile
from pathlib import Path

import pytest

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # the quiet level `edge` uses (edgekit/quiet.py)

import edgekit  # noqa: E402,F401  sets TensorFlow up for this CPU (oneDNN, EDGE_CPU) before any test imports it

from testdata import write_folder  # noqa: E402


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory) -> Path:
    return write_folder(tmp_path_factory.mktemp("tiny") / "data")


@pytest.fixture(scope="session")
def tiny_tar(tiny_folder, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tar") / "tiny.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        tar.add(tiny_folder / "train", arcname="train")
        tar.add(tiny_folder / "test", arcname="test")
    return path


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory):
    """Tests never read or fill the user's ~/.cache/edgekit."""
    old = os.environ.get("EDGE_CACHE_DIR")
    os.environ["EDGE_CACHE_DIR"] = str(tmp_path_factory.mktemp("edge-cache"))
    yield
    if old is None:
        os.environ.pop("EDGE_CACHE_DIR", None)
    else:
        os.environ["EDGE_CACHE_DIR"] = old


@pytest.fixture
def cache_dir(tmp_path, monkeypatch) -> Path:
    d = tmp_path / "cache"
    monkeypatch.setenv("EDGE_CACHE_DIR", str(d))
    return d


@pytest.fixture(scope="session")
def tiny_run(tiny_folder, tmp_path_factory) -> Path:
    """A resnet8 run trained for 2 epochs on the tiny folder (copy it before writing into it)."""
    from edgekit.train.config import build_config
    from edgekit.train.run import train
    # augment: seed keeps the model the convert tests were tuned on (ties, QAT tolerance) from before `fast`
    cfg = build_config(None, dict(data=str(tiny_folder), preset="resnet8", epochs=2, batch_size=16, lr=0.01,
                                  early_stopping_patience=0, seed=7, augment="seed"))
    run = train(cfg, tmp_path_factory.mktemp("tiny-run") / "run")
    _settle_batchnorm(run, tiny_folder)
    return run


def _settle_batchnorm(run: Path, data: Path) -> None:
    """Two epochs of 3 steps leave BatchNorm's moving statistics near their initial values, so the model
    outputs near-ties that quantization flips at random. Setting them to the training set's statistics
    (as many more steps would) gives the confident model a real run ends with; the rest of the run stays as trained."""
    import tensorflow as tf
    import tf_keras as keras

    from edgekit.train.data import load_dataset
    from edgekit_runtime import PreprocessSpec
    from edgekit.train.pipeline import to_model_input
    spec = PreprocessSpec.load(run / "preprocess.json")
    x = to_model_input(tf.constant(load_dataset(str(data), spec.size, seed=7).train.x), spec)
    model = keras.models.load_model(run / "model.keras", compile=False)
    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in bns:
        layer.momentum = 0.0  # moving statistics := this batch's statistics
    model(x, training=True)
    for layer in bns:
        layer.momentum = 0.99
    model.save(run / "model.keras")




@pytest.fixture(scope="session")
def sshd(tmp_path_factory):
    from sshd_server import start_sshd
    yield from start_sshd(tmp_path_factory)


_TF_FIRST = []   # the test after which TensorFlow was first found imported


def pytest_ignore_collect(collection_path, config):
    """In the fast tier, a module marked tf as a whole is not even imported (importing it would load TensorFlow)."""
    if config.getoption("markexpr", "") != "not tf" or collection_path.suffix != ".py":
        return None
    try:
        text = collection_path.read_text(encoding="utf-8")
    except OSError:
        return None
    return True if "\npytestmark = pytest.mark.tf" in text else None


def pytest_runtest_teardown(item):
    if not _TF_FIRST and "tensorflow" in sys.modules:
        _TF_FIRST.append(item.nodeid)


def pytest_sessionfinish(session, exitstatus):
    """The fast tier (-m 'not tf') must not have imported TensorFlow: an unmarked test that needs it fails the run.
    It runs in one process (`make test-fast`); under xdist workers this check would not reach the exit status."""
    if session.config.getoption("markexpr", "") == "not tf" and "tensorflow" in sys.modules:
        first = _TF_FIRST[0] if _TF_FIRST else "collection (a test module imports it)"
        print(f"\nERROR: the fast tier (-m 'not tf') imported TensorFlow, first in {first}: mark the test that "
              "needs it with @pytest.mark.tf", file=sys.stderr)
        session.exitstatus = 1


# `make test` hands whole files to two pytest-xdist workers (--dist loadfile --no-loadscope-reorder) in collection
# order; starting with the longest files (measured: seconds on two workers) keeps both workers busy to the end
# instead of leaving one to finish a long file alone.
LONGEST_FIRST = ("test_zoo.py", "test_distribute.py", "test_train_recipes.py", "test_train.py", "test_convert.py",
                 "test_foreign_models.py", "test_quiet.py", "test_pack.py", "test_bundle_trust.py", "test_bench.py",
                 "test_models.py", "test_tiers.py", "test_bench_remote.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: each file keeps its own order
