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
