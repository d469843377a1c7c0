"""The runtime with an engine registered from outside (a numpy linear classifier): Classifier, `edge-run` and
export directories on real JPEG/PNG files, in milliseconds and without TensorFlow, LiteRT or ONNX Runtime."""
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from edgekit_runtime import Classifier
from edgekit_runtime.cli import main
from edgekit_runtime.engines import ENGINES, pick_engine, register_engine
from numpy_engine import NumpyEngine, expected_top1, mean_colour_model
from testdata import CLASSES, COLOURS, write_folder


@pytest.fixture(scope="module", autouse=True)
def registered():
    register_engine(NumpyEngine)
    yield
    ENGINES.pop(NumpyEngine.name)   # other test modules see the built-in engines only


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = write_folder(tmp_path_factory.mktemp("npz-data"), per_class_train=0, per_class_test=5)
    return sorted((root / "test").rglob("*.*"))


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return mean_colour_model(tmp_path_factory.mktemp("npz-model") / "colours.npz", CLASSES, COLOURS)


def decoded(files):
    return [np.asarray(Image.open(f).convert("RGB")) for f in files]


def test_the_engine_is_registered_and_chosen_by_suffix(model):
    assert ENGINES["numpy"] is NumpyEngine and pick_engine(model) is NumpyEngine
    register_engine(NumpyEngine)  # the same class again: nothing changes

    class Clash(NumpyEngine):
        pass
    with pytest.raises(ValueError, match="already registered"):
        register_engine(Clash)
    Clash.name, Clash.suffixes = "clash", ".npz"
    with pytest.raises(TypeError, match="tuple of lower-case suffixes"):
        register_engine(Clash)


def test_classifier_answers_from_embedded_labels_and_preprocessing(model, images):
    clf = Classifier.load(model)
    assert clf.labels == CLASSES and clf.engine_name == "numpy" and clf.input_shape == (32, 32, 3)
    want = expected_top1(decoded(images), CLASSES, COLOURS)
    got = [top[0][0] for top in clf.top_k(images, k=1)]
    assert got == want
    assert sum(w == f.parent.name for w, f in zip(want, images)) >= 0.9 * len(images)  # the model is a real one
    probs = clf.predict(images)
    assert probs.shape == (len(images), 3) and np.allclose(probs.sum(axis=1), 1, atol=1e-5)


def test_side_files_of_an_export_directory_win_over_embedded_ones(model, images, tmp_path):
    export = tmp_path / "export"
    export.mkdir()
    shutil.copy(model, export / "model.npz")
    (export / "labels.txt").write_text("\n".join(c.upper() for c in CLASSES) + "\n")
    clf = Classifier.load(export)
    assert clf.labels == [c.upper() for c in CLASSES]
    assert [t[0][0] for t in clf.top_k(images[:3], k=1)] == [w.upper() for w in
                                                              expected_top1(decoded(images[:3]), CLASSES, COLOURS)]


def test_edge_run_predict_and_info(model, images, capsys):
    assert main(["predict", str(model), *map(str, images), "--top-k", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["engine"] == "numpy" and out["failed"] == []
    assert [r["top_k"][0]["label"] for r in out["predictions"]] == expected_top1(decoded(images), CLASSES, COLOURS)
    assert all(len(r["top_k"]) == 2 for r in out["predictions"])
    assert main(["info", str(model), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["engine"] == "numpy" and info["labels"] == CLASSES
    assert info["labels_from"] == info["preprocess_from"] == "colours.npz (embedded)"


def test_a_broken_model_file_is_one_line_and_exit_2(tmp_path, images, capsys):
    bad = tmp_path / "broken.npz"
    bad.write_bytes(b"not a zip")
    assert main(["predict", str(bad), str(images[0])]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "not a numpy model" in err and "Traceback" not in err
