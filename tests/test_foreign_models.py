"""Models edgekit did not train: Keras 3 `.keras`/`.h5` files made offline in a real Keras 3 process, converted by
`edge convert`, run by the runtime and benchmarked from their export directory by `edge bench`."""
import json
import re
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from edgekit.cli import app
from edgekit.convert.formats import DEFAULT_FORMATS
from edgekit_runtime import Classifier

pytestmark = pytest.mark.tf

FORMATS = "tflite-fp32,tflite-int8,onnx-fp32,onnx-int8"

# Runs in a Keras 3 process (TF_USE_LEGACY_KERAS unset): trains a small CNN with its own normalisation layer on
# the tiny folder, saves it both ways, and records its top-1 on every test image decoded as the runtime does.
MAKE_KERAS3 = r"""
import json, sys
from pathlib import Path
import numpy as np
import keras
from edgekit_runtime import load_rgb, resize_rgb
out, data = Path(sys.argv[1]), Path(sys.argv[2])
keras.utils.set_random_seed(0)
classes = sorted(p.name for p in (data / "train").iterdir())

def images(split):
    files = [(f, i) for i, c in enumerate(classes) for f in sorted((data / split / c).iterdir())]
    return (np.stack([resize_rgb(load_rgb(f), (32, 32)) for f, _ in files]).astype("float32"),
            np.array([i for _, i in files]), [str(f) for f, _ in files])

x, y, _ = images("train")
inp = keras.Input((32, 32, 3))
h = keras.layers.Rescaling(1 / 127.5, offset=-1)(inp)
h = keras.layers.Conv2D(8, 3, activation="relu")(h)
h = keras.layers.BatchNormalization()(h)
h = keras.layers.GlobalAveragePooling2D()(h)
model = keras.Model(inp, keras.layers.Dense(len(classes), activation="softmax")(h))
model.compile(keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy")
model.fit(x, y, epochs=40, batch_size=16, verbose=0)
model.save(out / "k3.keras")
model.save(out / "k3.h5")
(out / "labels.txt").write_text("\n".join(classes) + "\n")
tx, ty, names = images("test")
top1 = model.predict(tx, verbose=0).argmax(1)
json.dump({"keras": keras.__version__, "files": names, "top1": top1.tolist(), "labels": ty.tolist()},
          open(out / "keras3.json", "w"))

@keras.saving.register_keras_serializable(package="mine")
class Doubler(keras.layers.Layer):
    def call(self, x):
        return 2 * x

i = keras.Input((32, 32, 3))
keras.Model(i, keras.layers.Dense(3, activation="softmax")(keras.layers.GlobalAveragePooling2D()(Doubler()(i)))).save(
    out / "custom.keras")

# models inside a model, flattened into their layers by convert: a Functional calling a Sequential, and a
# transfer-learning Sequential([backbone, pooling, head]) around a Functional backbone
inner = keras.Sequential([keras.layers.Conv2D(4, 3, activation="relu"), keras.layers.GlobalAveragePooling2D()])
i = keras.Input((32, 32, 3))
keras.Model(i, keras.layers.Dense(3, activation="softmax")(inner(keras.layers.Rescaling(1 / 255)(i)))).save(
    out / "nested.keras")
b = keras.Input((32, 32, 3))
backbone = keras.Model(b, keras.layers.BatchNormalization()(keras.layers.Conv2D(6, 3, activation="relu")(
    keras.layers.Rescaling(1 / 255)(b))), name="backbone")
transfer = keras.Sequential([keras.Input((32, 32, 3)), backbone, keras.layers.GlobalAveragePooling2D(),
                             keras.layers.Dense(3, activation="softmax")])
transfer.compile(keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy")
transfer.fit(x, y, epochs=20, batch_size=16, verbose=0)
transfer.save(out / "transfer.keras")
# two layers of one name once flattened: left wrapped as a SavedModel
inner = keras.Sequential([keras.layers.Conv2D(4, 3, activation="relu", name="twin"), keras.layers.GlobalAveragePooling2D()])
i = keras.Input((32, 32, 3))
keras.Model(i, keras.layers.Dense(3, activation="softmax", name="twin")(inner(keras.layers.Rescaling(1 / 255)(i)))).save(
    out / "clash.keras")
"""


@pytest.fixture(scope="module")
def keras3(tiny_folder, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("keras3")
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    proc = subprocess.run([sys.executable, "-c", MAKE_KERAS3, str(out), str(tiny_folder)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out


@pytest.mark.parametrize("name, formats", [("k3.keras", "default"), ("k3.h5", FORMATS)])
def test_a_keras3_model_converts_runs_and_benchmarks(name, formats, keras3, tiny_folder, tmp_path):
    truth = json.loads((keras3 / "keras3.json").read_text())
    assert np.mean(np.array(truth["top1"]) == truth["labels"]) > 0.5   # a model worth comparing answers with
    out = tmp_path / "export"
    runner = CliRunner()
    result = runner.invoke(app, ["convert", str(keras3 / name), "--labels", str(keras3 / "labels.txt"),
                                 "--scale", "1", "--offset", "0", "--data", str(tiny_folder), "--formats", formats,
                                 "--out", str(out)])
    assert result.exit_code == 0, result.output   # every format it supports (the default set: all but QAT) ✅
    made = FORMATS.split(",") if formats == FORMATS else DEFAULT_FORMATS
    assert f"source: Keras {truth['keras']}" in result.output and f"{len(made)}/{len(made)} validated" in result.output
    assert "using calibration 42 of 500 asked, validation 24 of 1,000 asked" in " ".join(result.output.split())
    manifest = json.loads((out / "manifest.json").read_text())
    # rebuilt as tf_keras layers (checked against its SavedModel), so int8 gets its bias correction
    assert manifest["source"]["saved_by"].startswith(f"Keras {truth['keras']} (rebuilt as tf_keras layers")
    notes = {e["format"]: e.get("notes") or [] for e in manifest["artifacts"]}
    assert any(n.startswith("bias correction on ") and not n.startswith("bias correction on 0 ")
               for n in notes["tflite-int8"]), notes

    for fmt in ("tflite-fp32", "onnx-fp32"):   # the runtime answers as Keras 3 does, image by image
        clf = Classifier.load(out, format=fmt)
        assert clf.predict(truth["files"]).argmax(1).tolist() == truth["top1"], fmt

    result = runner.invoke(app, ["bench", str(out), "--runs", "3", "--warmup", "1", "--threads", "1",
                                 "--batch", "1"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "bench" / "report.json").read_text())
    rows = {r["name"]: r for r in report["rows"]}
    assert set(rows) == {"keras", *made} and {r["status"] for r in rows.values()} == {"passed"}
    assert rows["keras"]["accuracy"]["top1"] == pytest.approx(np.mean(np.array(truth["top1"]) == truth["labels"]))
    assert rows["tflite-fp32"]["accuracy"]["top1"] == rows["keras"]["accuracy"]["top1"]
    if name == "k3.keras":
        _pack_installs_and_passes_its_smoke_test(out, tmp_path)


def _pack_installs_and_passes_its_smoke_test(export: Path, tmp_path: Path) -> None:
    """edge pack takes the export directory as it takes a run: samples from the data it was converted with."""
    from testdata import ARCH, PY, WHEELHOUSE, install, unpack
    bundle = tmp_path / "k3.tar.gz"
    result = CliRunner().invoke(app, ["pack", str(export), "--format", "tflite-int8", "--target", ARCH, "--python", PY,
                                      "--wheels", str(WHEELHOUSE), "--samples", "4", "--out", str(bundle)])
    assert result.exit_code == 0, result.output
    root = unpack(bundle, tmp_path / "unpacked")
    samples = json.loads((root / "pack.json").read_text())["samples"]
    assert len(samples) == 4 and all(s["truth"] in ("blue", "green", "red") for s in samples)
    done = install(root)
    assert done.returncode == 0 and "smoke test passed: 4 of 4" in done.stdout, done.stdout + done.stderr


def test_a_keras3_model_with_a_missing_custom_layer_names_it(keras3, tiny_folder, tmp_path):
    result = CliRunner().invoke(app, ["convert", str(keras3 / "custom.keras"), "--labels", str(keras3 / "labels.txt"),
                                      "--scale", "1", "--offset", "0", "--data", str(tiny_folder),
                                      "--out", str(tmp_path / "x")])
    assert result.exit_code == 2, result.output
    assert "custom class 'mine>Doubler'" in result.output or "custom class 'Doubler'" in result.output
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("name, inner", [("nested.keras", "'sequential'"), ("transfer.keras", "'backbone'")])
def test_a_keras3_model_with_models_inside_is_flattened_and_rebuilt(name, inner, keras3, tiny_folder, tmp_path):
    result = CliRunner().invoke(app, ["convert", str(keras3 / name), "--labels", str(keras3 / "labels.txt"),
                                      "--scale", "1", "--offset", "0", "--data", str(tiny_folder),
                                      "--formats", "tflite-fp32,tflite-int8", "--out", str(tmp_path / "x")])
    assert "Traceback" not in result.output and result.exit_code in (0, 3), result.output
    manifest = json.loads((tmp_path / "x" / "manifest.json").read_text())
    saved_by = manifest["source"]["saved_by"]
    assert "rebuilt as tf_keras layers" in saved_by and f"the nested model(s) {inner} flattened" in saved_by
    entries = {e["format"]: e for e in manifest["artifacts"]}
    assert entries["tflite-fp32"]["status"] == "passed"                  # the flat layers answer as the original
    assert any(n.startswith("bias correction on") for n in entries["tflite-int8"]["notes"])
    assert entries["tflite-int8"]["layer_errors"]                        # per-layer, now that there are layers


def test_a_keras3_model_that_is_not_rebuilt_is_wrapped_and_says_what_it_loses(keras3, tiny_folder, tmp_path):
    result = CliRunner().invoke(app, ["convert", str(keras3 / "clash.keras"), "--labels", str(keras3 / "labels.txt"),
                                      "--scale", "1", "--offset", "0", "--data", str(tiny_folder),
                                      "--formats", "tflite-int8,tflite-qat,onnx-fp32", "--out", str(tmp_path / "x")])
    assert result.exit_code == 3, result.output
    manifest = json.loads((tmp_path / "x" / "manifest.json").read_text())
    assert re.search(r"not rebuilt as tf_keras layers: layer 'sequential(_\d+)?' is a Sequential",
                     manifest["source"]["saved_by"])   # flattening it would give two layers named 'twin'

    entries = {e["format"]: e for e in manifest["artifacts"]}
    assert entries["onnx-fp32"]["status"] == "passed" and entries["tflite-int8"]["status"] != "failed"  # untrained
    assert any("bias correction not applied" in n for n in entries["tflite-int8"]["notes"])   # said, not silent
    assert "bias correction not applied" in re.sub(r"[│\s]+", " ", result.output)          # in the table too
    assert entries["tflite-qat"]["status"] == "failed" and "QAT needs the model's own tf_keras layers" in \
        entries["tflite-qat"]["error"]


@pytest.fixture(scope="module")
def unlabelled(tiny_folder, tmp_path_factory) -> Path:
    """Every tiny-folder image in one flat folder (no class folders), 66 in all."""
    import shutil
    flat = tmp_path_factory.mktemp("flat") / "photos"
    flat.mkdir()
    for f in sorted(tiny_folder.rglob("*")):
        if f.is_file():
            shutil.copy(f, flat / "_".join(f.relative_to(tiny_folder).parts))
    return flat


def test_unlabelled_images_calibrate_and_validate_by_agreement(keras3, unlabelled, tmp_path):
    out = tmp_path / "export"
    runner = CliRunner()
    result = runner.invoke(app, ["convert", str(keras3 / "k3.keras"), "--labels", str(keras3 / "labels.txt"),
                                 "--scale", "1", "--offset", "0", "--data", str(unlabelled), "--out", str(out),
                                 "--formats", "tflite-int8,onnx-int8,tflite-qat", "--calib-samples", "10",
                                 "--val-samples", "100"])
    assert result.exit_code == 3, result.output   # QAT needs labels: its row says so, the others are made
    said = " ".join(result.output.split())
    assert "66 unlabelled image(s): validation 60, calibration 6 (no overlap)" in said
    assert "validation 60 of 100 asked; calibration 6 of 10 asked: the data has no more" in said
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["calibration"]["images"] == 6 and manifest["validation"]["images"] == 60
    assert manifest["validation"]["keras_accuracy"] is None
    rows = {e["format"]: e for e in manifest["artifacts"]}
    assert rows["tflite-qat"]["status"] == "failed" and "labelled training images" in rows["tflite-qat"]["error"]
    for fmt in ("tflite-int8", "onnx-int8"):
        assert rows[fmt]["status"] == "passed" and rows[fmt]["parity"]["accuracy"] is None
        assert rows[fmt]["parity"]["top1_agreement"] >= 0.9

    result = runner.invoke(app, ["bench", str(out), "--runs", "3", "--warmup", "1", "--threads", "1", "--batch", "1"])
    assert result.exit_code == 3, result.output   # the QAT row is ❌
    report = json.loads((out / "bench" / "report.json").read_text())
    measured = {r["name"]: r for r in report["rows"] if r["status"] == "passed"}
    assert set(measured) == {"keras", "tflite-int8", "onnx-int8"}
    for row in measured.values():
        assert row["accuracy"]["top1"] is None and row["accuracy"]["images"] == 66
        assert row["accuracy"]["agreement"] >= 0.9

    from testdata import ARCH, PY, WHEELHOUSE
    result = runner.invoke(app, ["pack", str(out), "--format", "tflite-int8", "--samples", "3", "--out",
                                 str(tmp_path / "b.tar.gz"), "--wheels", str(WHEELHOUSE), "--target", ARCH,
                                 "--python", PY])
    assert result.exit_code == 0, result.output   # samples without labels: the artifact's answer is what is checked
    import tarfile
    with tarfile.open(tmp_path / "b.tar.gz") as tar:
        pack = json.load(tar.extractfile(next(n for n in tar.getnames() if n.endswith("/pack.json"))))
    assert len(pack["samples"]) == 3 and {s["truth"] for s in pack["samples"]} == {None}
    assert all(s["file"].endswith("_unlabelled.png") and s["expected"] in ("blue", "green", "red") for s in pack["samples"])


@pytest.mark.parametrize("form", ["glob", "tar"])
def test_unlabelled_images_from_a_glob_or_an_archive(form, keras3, unlabelled, tmp_path):
    import tarfile
    if form == "glob":
        data = str(unlabelled / "*.png")
        count = len(list(unlabelled.glob("*.png")))
    else:
        data = str(tmp_path / "photos.tar.gz")
        with tarfile.open(data, "w:gz") as tar:
            tar.add(unlabelled, arcname="photos")
        count = 66
    result = CliRunner().invoke(app, ["convert", str(keras3 / "k3.keras"), "--labels", str(keras3 / "labels.txt"),
                                      "--scale", "1", "--offset", "0", "--data", data, "--out", str(tmp_path / "e"),
                                      "--formats", "tflite-int8", "--calib-samples", "4", "--val-samples", "8"])
    assert result.exit_code == 0, result.output
    assert f"{count} unlabelled image(s): validation 8, calibration 4 (no overlap)" in " ".join(result.output.split())


@pytest.mark.parametrize("content, message", [
    ({}, "no images in"),
    ({"a.jpg": b"not an image", "b.png": b"\x89PNG broken"}, "none of the 2 image(s)"),
])
def test_a_folder_without_readable_images_is_one_line(content, message, keras3, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for name, blob in content.items():
        (folder / name).write_bytes(blob)
    result = CliRunner().invoke(app, ["convert", str(keras3 / "k3.keras"), "--labels", str(keras3 / "labels.txt"),
                                      "--scale", "1", "--offset", "0", "--data", str(folder),
                                      "--out", str(tmp_path / "e"), "--formats", "tflite-int8"])
    assert result.exit_code == 2 and message in result.output, result.output
    assert not (tmp_path / "e").exists()


FIXTURES = Path(__file__).resolve().parent / "fixtures"
TORCH_PREPROCESS = ["--mean", "0.485", "0.456", "0.406", "--std", "0.229", "0.224", "0.225"]


def _ort_top1(model: Path, files, spec) -> list:
    """What the PyTorch export answers in ONNX Runtime itself, fed NCHW by hand (no edgekit code in the way)."""
    import onnxruntime as ort
    from edgekit_runtime import load_rgb, resize_rgb
    x = np.stack([resize_rgb(load_rgb(f), (32, 32)) for f in files]).astype(np.float32)
    x = x * np.float32(spec["scale"]) + np.float32(spec["offset"])
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": np.ascontiguousarray(x.transpose(0, 3, 1, 2))})[0].argmax(1).tolist()


def test_an_onnx_model_from_pytorch_converts_runs_and_benchmarks(tiny_folder, tmp_path):
    from edgekit.helpers import file_digest
    out = tmp_path / "export"
    runner = CliRunner()
    before = file_digest(FIXTURES / "torch_cnn.onnx")
    result = runner.invoke(app, ["convert", str(FIXTURES / "torch_cnn.onnx"), "--labels",
                                 str(FIXTURES / "torch_cnn.labels.txt"), *TORCH_PREPROCESS, "--data", str(tiny_folder),
                                 "--out", str(out)])
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())
    made = [f for f in DEFAULT_FORMATS]
    assert f"an ONNX source: converting {', '.join(made)} (the TFLite formats through onnx2tf)" in said
    assert "NCHW input, made by pytorch" in said and f"{len(made)}/{len(made)} validated" in said
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["source"]["kind"] == "onnx" and manifest["source"]["preprocess"]["layout"] == "NCHW"
    assert [e["format"] for e in manifest["artifacts"]] == made
    notes = {e["format"]: e.get("notes") or [] for e in manifest["artifacts"]}
    assert any(n.startswith("bias correction not applied") for n in notes["tflite-int8"]), notes
    assert file_digest(FIXTURES / "torch_cnn.onnx") == before   # onnx2tf rewrites its input: it gets a copy
    spec = manifest["source"]["preprocess"]
    np.testing.assert_allclose(spec["scale"], 1 / (255 * np.array([0.229, 0.224, 0.225])), rtol=1e-6)

    files = sorted(str(f) for f in (tiny_folder / "test").rglob("*") if f.is_file())
    truth = _ort_top1(FIXTURES / "torch_cnn.onnx", files, spec)
    for fmt in ("onnx-fp32", "onnx-int8", "tflite-fp32", "tflite-int8"):   # each answers as ONNX Runtime on the source
        clf = Classifier.load(out, format=fmt)
        assert clf.engine.layout == ("NCHW" if fmt.startswith("onnx") else "NHWC")   # onnx2tf's are channels-last
        assert clf.predict(files).argmax(1).tolist() == truth, fmt

    result = runner.invoke(app, ["bench", str(out), "--runs", "3", "--warmup", "1", "--threads", "1", "--batch", "1"])
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads((out / "bench" / "report.json").read_text())["rows"]}
    assert rows["keras"]["engine"] == "onnxruntime" and {r["status"] for r in rows.values()} == {"passed"}
    assert rows["onnx-fp32"]["accuracy"]["top1"] == rows["keras"]["accuracy"]["top1"]


def test_a_tflite_format_of_an_onnx_model_without_onnx2tf_is_a_row_with_its_reason(tiny_folder, tmp_path, monkeypatch):
    from edgekit.convert import onnx_to_tf
    monkeypatch.setattr(onnx_to_tf, "find_spec", lambda name: None)   # as where onnx2tf is not installed
    result = CliRunner().invoke(app, ["convert", str(FIXTURES / "torch_cnn.onnx"), "--labels",
                                      str(FIXTURES / "torch_cnn.labels.txt"), *TORCH_PREPROCESS, "--data",
                                      str(tiny_folder), "--formats", "tflite-int8,tflite-qat,onnx-fp32",
                                      "--out", str(tmp_path / "e")])
    assert result.exit_code == 3, result.output
    rows = {e["format"]: e for e in json.loads((tmp_path / "e" / "manifest.json").read_text())["artifacts"]}
    assert rows["onnx-fp32"]["status"] == "passed"
    assert rows["tflite-int8"]["status"] == "failed" and rows["tflite-int8"]["error"] == (
        "tflite-int8 from an ONNX model needs the ONNX → TFLite converter onnx2tf is not installed "
        "(pip install --no-deps onnx2tf onnx-graphsurgeon sng4onnx psutil).")
    assert rows["tflite-qat"]["status"] == "failed" and "an ONNX source has none" in rows["tflite-qat"]["error"]


def _onnx_with(tmp_path, inputs, name="odd.onnx"):
    import onnx
    from onnx import TensorProto, helper
    nodes = [helper.make_node("Identity", [inputs[0][0]], ["out"])]
    graph = helper.make_graph(nodes, "odd", [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, inputs[0][1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / name))
    return tmp_path / name


@pytest.mark.parametrize("case, message", [
    ("two_inputs", "has 2 inputs (a, b)"),
    ("not_an_image", "not a float image batch"),
    ("dynamic_size", "dynamic height/width (NCHW input): pass --input-size H W"),
    ("mean_and_scale", "either as --scale/--offset or as --mean/--std"),
    ("wrong_labels", "outputs shape"),
    ("not_onnx", "is not a loadable ONNX model"),
])
def test_bad_onnx_input_is_one_line(case, message, tiny_folder, tmp_path):
    labels = FIXTURES / "torch_cnn.labels.txt"
    model, extra = FIXTURES / "torch_cnn.onnx", []
    if case == "two_inputs":
        model = _onnx_with(tmp_path, [("a", ["n", 3, 8, 8]), ("b", ["n", 3, 8, 8])])
    elif case == "not_an_image":
        model = _onnx_with(tmp_path, [("a", ["n", 10])])
    elif case == "dynamic_size":
        model = _onnx_with(tmp_path, [("a", ["n", 3, "h", "w"])])
    elif case == "mean_and_scale":
        extra = ["--scale", "1"]
    elif case == "wrong_labels":
        labels = tmp_path / "labels.txt"
        labels.write_text("a\nb\n")
    elif case == "not_onnx":
        model = tmp_path / "broken.onnx"
        model.write_bytes(b"not a protobuf at all")
    result = CliRunner().invoke(app, ["convert", str(model), "--labels", str(labels), *TORCH_PREPROCESS, *extra,
                                      "--data", str(tiny_folder), "--out", str(tmp_path / "e")])
    assert result.exit_code == 2 and message in " ".join(result.output.split()), result.output
    assert not (tmp_path / "e").exists()


def test_labelled_data_with_an_unreadable_image_stops_or_goes_on_with_skip_bad(keras3, tiny_folder, tmp_path):
    import shutil
    data = Path(shutil.copytree(tiny_folder, tmp_path / "data"))
    (data / "train" / "red" / "broken.jpg").write_bytes(b"not a jpeg")
    args = ["convert", str(keras3 / "k3.keras"), "--labels", str(keras3 / "labels.txt"), "--scale", "1",
            "--offset", "0", "--data", str(data), "--formats", "onnx-fp32", "--out", str(tmp_path / "e")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "pass --skip-bad" in result.output and not (tmp_path / "e").exists()
    result = CliRunner().invoke(app, args + ["--skip-bad"])
    assert result.exit_code == 0, result.output
    assert "skipped 1 unreadable image(s)" in " ".join(result.output.split())
