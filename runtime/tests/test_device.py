"""edgekit-runtime on its own, as a device has it: only numpy, Pillow, the engines and these files (no TensorFlow,
no edgekit). `make test-runtime` runs this in a venv holding just `./runtime[litert,onnx]` and pytest."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgekit_runtime import Classifier
from edgekit_runtime.cli import main
from images import CLASSES, images

DATA = Path(__file__).resolve().parent / "data"
EXPECTED = json.loads((DATA / "expected.json").read_text())
ARTIFACTS = sorted(EXPECTED["artifacts"])


@pytest.mark.parametrize("name", ARTIFACTS)
def test_artifact_answers_as_recorded_with_embedded_labels_and_preprocessing(name):
    clf = Classifier.load(DATA / name)
    assert clf.labels == CLASSES and clf.info.labels_source.endswith("(embedded)")  # no side files here
    x, _ = images(12, seed=2)
    want = np.array(EXPECTED["artifacts"][name], np.float32)
    step = 1 / 256 if "int8" in name else 1e-5   # an int8 output moves in steps of its quantization
    np.testing.assert_allclose(clf.predict(x), want, rtol=0, atol=step * 1.01)
    assert (clf.predict(x).argmax(1) == want.argmax(1)).all()


def test_files_decode_like_arrays_and_the_cli_names_every_bad_image(tmp_path, capsys):
    x, _ = images(4, seed=2)
    paths = []
    for i, arr in enumerate(x):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(arr).save(paths[-1])
    model = DATA / "model_tflite-int8.tflite"
    clf = Classifier.load(model)
    np.testing.assert_array_equal(clf.predict(paths), clf.predict(x))   # PNG is lossless
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    argv = ["predict", str(model), str(paths[0]), str(tmp_path / "bad.jpg"), str(paths[1]), "--json"]
    assert main(argv) == 2
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert [p["image"] for p in out["predictions"]] == [str(paths[0]), str(paths[1])]
    assert out["failed"][0]["image"] == str(tmp_path / "bad.jpg") and "bad.jpg" in captured.err
    assert main(["info", str(model), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["input"]["dtype"] == "uint8" and info["labels"] == CLASSES


def test_the_installed_console_script_runs_without_tensorflow(tmp_path):
    image = tmp_path / "a.png"
    Image.fromarray(images(1, seed=3)[0][0]).save(image)
    exe = shutil.which("edge-run", path=str(Path(sys.executable).parent)) or "edge-run"
    done = subprocess.run([exe, "predict", str(DATA / "model_onnx-fp32.onnx"), str(image)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0 and done.stderr == "" and done.stdout.startswith(f"{image}: ")
    code = ("import sys, edgekit_runtime\n"
            f"edgekit_runtime.Classifier.load({str(DATA / 'model_tflite-fp32.tflite')!r}).predict({str(image)!r})\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'tf_keras', 'keras', 'edgekit')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stderr


@pytest.mark.parametrize("name", ARTIFACTS)
def test_a_batch_answers_as_its_images_one_by_one(name):
    clf = Classifier.load(DATA / name)
    x, _ = images(7, seed=4)
    one_by_one = np.concatenate([clf.predict(x[i:i + 1]) for i in range(len(x))])
    np.testing.assert_allclose(clf.predict(x, batch_size=3), one_by_one, rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", ARTIFACTS)
def test_top_k_names_the_classes_in_order_of_probability(name):
    clf = Classifier.load(DATA / name)
    x, y = images(6, seed=5)
    probs = clf.predict(x)
    for row, ranked, truth in zip(probs, clf.top_k(x, k=3), y):
        assert [label for label, _ in ranked] == [CLASSES[i] for i in np.argsort(-row, kind="stable")]
        assert [p for _, p in ranked] == pytest.approx(sorted(row, reverse=True))
        assert ranked[0][0] == CLASSES[truth]   # the committed models are trained on these colours


def test_bad_input_exits_with_the_enum_code_and_one_line(tmp_path, capsys):
    from edgekit_runtime.exits import Exit
    assert main(["predict", str(DATA / "model_tflite-int8.tflite"), str(tmp_path / "missing.jpg")]) == Exit.BAD_INPUT
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing.jpg" in err[0] and "Traceback" not in err[0]
