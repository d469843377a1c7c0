"""edge convert on a tiny trained run: every format exports and validates through the runtime; a bad
artifact is caught (❎), a failing format is isolated (❌), bad input is one line and writes nothing."""
import dataclasses
import hashlib
import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras
from typer.testing import CliRunner

from edgekit.cli import app
from edgekit.convert import FORMATS, ConvertConfig, Tolerance, convert
from edgekit.convert import export_onnx
from edgekit.convert.calibration import calibration_images, load_images, validation_images
from edgekit.helpers import balanced_indices
from edgekit.convert.context import ExportContext
from edgekit.convert.export import export_format
from edgekit.convert.source import open_run
from edgekit.convert.validate import ValidationError, reference, validate
from edgekit.errors import EdgeError
from edgekit_runtime import Classifier, PreprocessSpec
from edgekit_runtime.tflite_meta import read_metadata

pytestmark = pytest.mark.tf  # trains, converts or loads models with TensorFlow

runner = CliRunner()
SCALE = str(1 / 255)


def cli(*args):
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


def leftovers(folder: Path):
    """Staging directories or temporary files a convert run would leave if it were not atomic."""
    return [p.name for p in Path(folder).iterdir() if "staging" in p.name or p.name.startswith(".tmp-")]


@pytest.fixture(scope="module")
def run_dir(tiny_run, tmp_path_factory) -> Path:
    """A private copy of the session's tiny trained run (this module writes RUN_DIR/export)."""
    return Path(shutil.copytree(tiny_run, tmp_path_factory.mktemp("convert") / "run"))


@pytest.fixture(scope="module")
def full(run_dir):
    """Every format, QAT included (one epoch), into RUN_DIR/export."""
    return convert(ConvertConfig(run_dir, formats="all", qat_epochs=1))


def test_every_format_exports_and_validates(full, run_dir):
    statuses = {e["format"]: e["status"] for e in full.entries}
    assert statuses == {name: "passed" for name in FORMATS}, statuses
    assert full.exit_code == 0 and full.all_passed
    export = run_dir / "export"
    assert export == full.out_dir
    assert {p.name for p in export.iterdir()} == {f.file_name for f in FORMATS.values()} | {
        "labels.txt", "preprocess.json", "manifest.json"}
    assert (export / "labels.txt").read_text() == (run_dir / "labels.txt").read_text()
    assert PreprocessSpec.load(export / "preprocess.json") == PreprocessSpec.load(run_dir / "preprocess.json")
    assert leftovers(run_dir) == [] and leftovers(export) == []
    for fmt in FORMATS.values():
        clf = Classifier.load(export / fmt.file_name)
        assert clf.labels == ["blue", "green", "red"]


def test_manifest_describes_each_artifact(full, run_dir):
    export = run_dir / "export"
    m = json.loads((export / "manifest.json").read_text())
    assert m["source"]["kind"] == "run" and len(m["source"]["model_sha256"]) == 64
    assert m["source"]["labels"] == ["blue", "green", "red"]
    assert m["calibration"]["split"] == "train" and len(set(m["calibration"]["per_class"].values())) == 1
    assert m["validation"]["images"] > 0 and m["validation"]["split"].startswith("test")
    entries = {e["format"]: e for e in m["artifacts"]}
    assert list(entries) == list(FORMATS)  # table order
    labels = (run_dir / "labels.txt").read_text().split()
    spec = json.loads((run_dir / "preprocess.json").read_text())
    for name, e in entries.items():
        path = export / e["file"]
        assert e["status"] == "passed" and e["symbol"] == "✅"
        assert e["size_bytes"] == path.stat().st_size
        assert e["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert e["inputs"][0]["shape"] == [None, 32, 32, 3] and e["outputs"][0]["shape"] == [None, 3]
        assert e["ops"] and e["convert_seconds"] > 0 and "tensorflow" in e["tools"]
        assert e["tolerance"] == FORMATS[name].tolerance.to_dict()
        p = e["parity"]
        assert p["images"] == m["validation"]["images"] and p["top1_agreement"] >= 0.9
        if path.suffix == ".tflite":
            meta = json.loads(read_metadata(path)["edgekit"])
        else:
            import onnx
            props = {q.key: q.value for q in onnx.load(str(path)).metadata_props}
            meta = {"labels": json.loads(props["labels"]), "preprocess": json.loads(props["preprocess"])}
        assert meta["labels"] == labels and meta["preprocess"] == spec
    assert entries["tflite-fp32"]["parity"]["max_abs_diff"] <= 1e-4
    int8 = entries["tflite-int8"]
    assert int8["inputs"][0]["dtype"] == "uint8" and int8["outputs"][0]["dtype"] == "uint8"
    assert int8["inputs"][0]["quantization"]["scale"][0] == pytest.approx(1 / 255, rel=1e-3)
    assert "CONV_2D" in int8["ops"] and "DELEGATE" not in int8["ops"]
    assert entries["tflite-int16x8"]["inputs"][0]["dtype"] == "float32"
    assert {"QuantizeLinear", "DequantizeLinear"} <= set(entries["onnx-int8"]["ops"])
    assert entries["onnx-int8"]["opset"]["ai.onnx"] == 17
    assert "tensorflow-model-optimization" in entries["tflite-qat"]["tools"]
    # the baseline is the converter alone: same int8 kernels and I/O, none of tflite-int8's corrections
    stock = entries["tflite-int8-stock"]
    assert stock["inputs"][0]["dtype"] == "uint8" and "CONV_2D" in stock["ops"]
    assert any("bias correction on" in n for n in int8.get("notes", []))
    assert not any("bias correction" in n or "GPTQ" in n or "activation ranges" in n for n in stock.get("notes", []))
    assert stock["sha256"] != int8["sha256"] and "layer_errors" not in stock


def _other_model(seed: int) -> keras.Model:
    from edgekit.train.models import resnet8
    keras.utils.set_random_seed(seed)
    return resnet8((32, 32, 3), 3, 0.0, 0.0)


def test_validation_collects_every_mismatch(full, run_dir, tmp_path):
    source = open_run(run_dir)
    dataset = load_images(source)
    ref = reference(source.model, validation_images(dataset, 1000, 7, source.spec, source.labels))
    folder = tmp_path / "mixed"
    shutil.copytree(run_dir / "export", folder)
    # Deliberately wrong artifacts: another network's weights under the fp32 names, and a corrupt file.
    ctx = ExportContext(_other_model(123), source.labels, source.spec)
    assert export_format(FORMATS["tflite-fp32"], ctx, folder).ok
    assert export_format(FORMATS["onnx-fp32"], ctx, folder).ok
    (folder / "model_tflite-fp16.tflite").write_bytes(b"not a flatbuffer" * 10)
    report = validate([(FORMATS[n], folder / FORMATS[n].file_name)
                       for n in ("tflite-fp32", "onnx-fp32", "tflite-fp16", "tflite-int8")], ref)
    assert not report.passed
    assert report.results["tflite-int8"].passed
    assert {m.metric for m in report.results["tflite-fp32"].mismatches} >= {"max_abs_diff"}
    assert report.results["tflite-fp16"].mismatches[0].metric == "runs"
    with pytest.raises(ValidationError) as info:
        report.raise_for_mismatch()
    assert isinstance(info.value, EdgeError) and info.value.exit_code == 3
    assert {m.format for m in info.value.mismatches} == {"tflite-fp32", "onnx-fp32", "tflite-fp16"}
    assert "tflite-fp32: max_abs_diff" in str(info.value) and "\n" not in str(info.value)


def test_outside_tolerance_is_exported_flagged_and_exit_3(run_dir, tmp_path, monkeypatch):
    strict = dataclasses.replace(FORMATS["onnx-fp32"], tolerance=Tolerance(max_abs=-1.0, mean_abs=1e-5))
    monkeypatch.setitem(FORMATS, "onnx-fp32", strict)
    code, out = cli("convert", run_dir, "--formats", "onnx-fp32", "--out", tmp_path / "x", "--val-samples", 12)
    assert code == 3, out
    assert "❎" in out and "max_abs_diff" in out
    m = json.loads((tmp_path / "x" / "manifest.json").read_text())
    (entry,) = m["artifacts"]
    assert entry["status"] == "outside_tolerance" and entry["mismatches"][0]["limit"] == -1.0
    assert (tmp_path / "x" / "model_onnx-fp32.onnx").is_file()
    assert m["validation"]["images"] == 12


def test_one_failing_format_does_not_stop_the_others(run_dir, tmp_path, monkeypatch):
    def broken(ctx, opset):
        raise RuntimeError("tf2onnx exploded\nwith a long traceback")
    monkeypatch.setattr(export_onnx, "to_onnx", broken)
    out = tmp_path / "out"
    report = convert(ConvertConfig(run_dir, formats="onnx-fp32,tflite-int8,onnx-int8", io="int8", out=out,
                                   calib_samples=30, val_samples=20))
    status = {e["format"]: e for e in report.entries}
    assert status["tflite-int8"]["status"] == "passed"
    assert status["tflite-int8"]["inputs"][0]["dtype"] == "int8"  # --io int8
    for name in ("onnx-fp32", "onnx-int8"):
        assert status[name]["status"] == "failed" and status[name]["symbol"] == "❌"
        assert status[name]["error"] == "RuntimeError: tf2onnx exploded" and status[name]["file"] is None
    assert report.exit_code == 3
    assert sorted(p.name for p in out.glob("model_*")) == ["model_tflite-int8.tflite"]


def test_unsupported_op_is_named_with_the_flag_that_allows_it(tmp_path):
    inp = keras.Input((8, 8, 3))
    x = keras.layers.Lambda(lambda t: tf.math.cumprod(t, axis=1))(inp)
    model = keras.Model(inp, keras.layers.Dense(3, activation="softmax")(keras.layers.GlobalAveragePooling2D()(x)))
    ctx = ExportContext(model, ["a", "b", "c"], PreprocessSpec(8, 8))
    result = export_format(FORMATS["tflite-fp32"], ctx, tmp_path)
    assert not result.ok and result.path is None
    assert "Cumprod" in result.error and "SELECT_TF_OPS" in result.error and "\n" not in result.error
    assert list(tmp_path.iterdir()) == []


def test_interrupted_convert_writes_nothing(run_dir, tmp_path, monkeypatch):
    def interrupted(fmt, ctx, path):
        path.write_bytes(b"half")
        raise KeyboardInterrupt
    monkeypatch.setattr(export_onnx, "export", interrupted)
    with pytest.raises(KeyboardInterrupt):
        convert(ConvertConfig(run_dir, formats="onnx-fp32", out=tmp_path / "out", val_samples=10))
    assert list(tmp_path.iterdir()) == []


def _fake_keras3(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("metadata.json", json.dumps({"keras_version": "3.1.0"}))
        z.writestr("config.json", "{}")
    return path


def _broken_run(run_dir: Path, dest: Path, **changes) -> Path:
    shutil.copytree(run_dir, dest, ignore=shutil.ignore_patterns("export", "checkpoints"))
    if "truncate" in changes:
        blob = (dest / "model.keras").read_bytes()
        (dest / "model.keras").write_bytes(blob[: len(blob) // 2])
    if "data" in changes:
        cfg = (dest / "config.yaml").read_text()
        (dest / "config.yaml").write_text("\n".join(
            f"data: {changes['data']}" if line.startswith("data:") else line for line in cfg.splitlines()) + "\n")
    return dest


@pytest.mark.parametrize("case, message", [
    ("empty_dir", "no model.keras"),
    ("truncated_run", "is truncated"),
    ("foreign_file", "is not a Keras model file"),
    ("keras3", "cannot load k3.keras in Keras 3"),
    ("unknown_format", "unknown format 'onnx-int9'. Did you mean 'onnx-int8'?"),
    ("bad_io", "--io must be one of uint8, int8"),
    ("data_gone", "calibration data: data path"),
    ("byo_without_data", "pass --data PATH"),
    ("byo_without_scale", "give its preprocessing with --scale and --offset"),
    ("byo_wrong_size", "takes 32x32 images but the preprocessing says 64x64: pass --input-size 32 32"),
    ("byo_two_scales", "--scale takes one value or three"),
    ("byo_wrong_labels", "there are 2 labels"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(case, message, run_dir, tiny_folder, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    labels = run_dir / "labels.txt"
    byo = ["--labels", labels, "--scale", SCALE, "--offset", "0", "--data", tiny_folder]
    args = {
        "empty_dir": lambda: [work],
        "truncated_run": lambda: [_broken_run(run_dir, work / "run", truncate=True)],
        "foreign_file": lambda: [_write(work / "model.h5", b"<html>not a model</html>"), *byo],
        "keras3": lambda: [_fake_keras3(work / "k3.keras"), *byo],
        "unknown_format": lambda: [run_dir, "--formats", "tflite-int8,onnx-int9"],
        "bad_io": lambda: [run_dir, "--io", "int4"],
        "data_gone": lambda: [_broken_run(run_dir, work / "run", data=str(tmp_path / "gone"))],
        "byo_without_data": lambda: [run_dir / "model.keras", "--labels", labels, "--scale", SCALE, "--offset", "0"],
        "byo_without_scale": lambda: [run_dir / "model.keras", "--labels", labels, "--data", tiny_folder],
        "byo_wrong_size": lambda: [run_dir / "model.keras", *byo, "--input-size", "64", "64"],
        "byo_two_scales": lambda: [run_dir / "model.keras", "--labels", labels, "--scale", "0.1", "0.2", "--offset", "0"],
        "byo_wrong_labels": lambda: [run_dir / "model.keras", "--labels", _write(work / "l.txt", b"a\nb\n"),
                                     "--scale", SCALE, "--offset", "0", "--data", tiny_folder],
    }[case]()  # lambdas: only this case's files are created
    before = sorted(p.name for p in run_dir.iterdir())
    code, out = cli("convert", *args, "--out", tmp_path / "out") if case != "data_gone" else cli("convert", *args)
    assert code == 2, out
    assert message in out and "Traceback" not in out
    assert len(out.strip().splitlines()) == 1 or out.count("error:") == 1
    assert not (tmp_path / "out").exists() and leftovers(work) == []
    assert sorted(p.name for p in run_dir.iterdir()) == before
    for sub in work.iterdir():
        assert not (sub.is_dir() and (sub / "export").exists())


def _write(path: Path, blob: bytes) -> Path:
    path.write_bytes(blob)
    return path


def test_calibration_sample_is_balanced_and_checked():
    y = np.array([0] * 10 + [1] * 2 + [2] * 5)
    idx = balanced_indices(y, 9, seed=1)
    counts = np.bincount(y[idx], minlength=3)
    assert counts.sum() == 9 and counts[1] == 2 and abs(int(counts[0]) - int(counts[2])) <= 1
    assert np.array_equal(idx, balanced_indices(y, 9, seed=1))  # seeded
    spec = PreprocessSpec(32, 32)
    with pytest.raises(EdgeError, match=r"shape \(4, 32, 32\)"):
        calibration_images(np.zeros((4, 32, 32), np.uint8), np.zeros(4, int), 4, 0, spec, ["a"])
    with pytest.raises(EdgeError, match="float32"):
        calibration_images(np.zeros((4, 32, 32, 3), np.float32), np.zeros(4, int), 4, 0, spec, ["a"])
    with pytest.raises(EdgeError, match="no calibration images"):
        calibration_images(np.zeros((0, 32, 32, 3), np.uint8), np.zeros(0, int), 4, 0, spec, ["a"])


def test_bring_your_own_model_and_savedmodel(run_dir, tiny_folder, tmp_path):
    out = tmp_path / "byo"
    code, output = cli("convert", run_dir / "model.keras", "--labels", run_dir / "labels.txt", "--scale", SCALE,
                       SCALE, SCALE, "--offset", "0", "--data", tiny_folder, "--formats", "onnx-fp32", "--out", out)
    assert code == 0, output
    assert "✅" in output and "1/1 validated" in output
    m = json.loads((out / "manifest.json").read_text())
    assert m["source"]["kind"] == "model" and m["source"]["preprocess"]["scale"] == [1 / 255] * 3

    # A plain TensorFlow SavedModel (what Keras 3's model.export() writes) converts too; QAT cannot.
    model = keras.models.load_model(run_dir / "model.keras", compile=False)

    class Serving(tf.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        @tf.function(input_signature=[tf.TensorSpec((None, 32, 32, 3), tf.float32, name="pixels")])
        def serve(self, x):
            return {"probs": self.m(x, training=False)}

    serving = Serving(model)
    saved = tmp_path / "saved"
    tf.saved_model.save(serving, str(saved), signatures={"serving_default": serving.serve})
    report = convert(ConvertConfig(saved, formats="tflite-fp32,onnx-fp32", scale=(1 / 255,), offset=(0.0,),
                                   labels=run_dir / "labels.txt", data=str(tiny_folder), out=out, val_samples=12))
    assert report.exit_code == 0, report.entries
    # Same folder, different source model: the earlier model's entries are stale and are dropped.
    formats = [e["format"] for e in json.loads((out / "manifest.json").read_text())["artifacts"]]
    assert formats == ["tflite-fp32", "onnx-fp32"]


def test_reconverting_merges_the_manifest(full, run_dir, tmp_path):
    out = tmp_path / "merge"
    assert convert(ConvertConfig(run_dir, formats="onnx-fp32", out=out, val_samples=10)).exit_code == 0
    assert convert(ConvertConfig(run_dir, formats="tflite-dynamic", out=out, val_samples=10)).exit_code == 0
    m = json.loads((out / "manifest.json").read_text())
    assert [e["format"] for e in m["artifacts"]] == ["tflite-dynamic", "onnx-fp32"]
    assert leftovers(out) == []


def test_onnx_int8_calibrates_on_many_batches(tmp_path):
    """32 calibration batches: with CalibMaxIntermediateOutputs=16, ORT 1.32 drops flushed batches and then finds
    "No data is collected" (the default 500 images make 32 batches of 16)."""
    from edgekit.convert.calibration import Images
    spec = PreprocessSpec(32, 32, scale=(1 / 255,) * 3)
    x = np.random.default_rng(0).integers(0, 256, (32 * 16, 32, 32, 3), dtype=np.uint8)
    ctx = ExportContext(_other_model(5), ["a", "b", "c"], spec, calibration=Images(x, None, spec, "train"))
    result = export_format(FORMATS["onnx-int8"], ctx, tmp_path)
    assert result.ok, result.error


def test_onnx_int8_gemm_weights_use_7_bits_and_biases_are_corrected(tmp_path):
    """x86 without VNNI sums u8*s8 pairs in int16 in ORT's GEMM kernels: GEMM weights (Conv, Dense) get 7 bits so
    that 2 * 255 * 64 fits, depthwise weights (int32 kernel) keep 8; a Conv without bias gets a corrected one."""
    import onnx
    from onnx import numpy_helper
    from edgekit.convert.calibration import Images
    keras.utils.set_random_seed(3)
    inp = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inp)
    x = keras.layers.DepthwiseConv2D(3, padding="same", activation="relu")(x)
    x = keras.layers.Conv2D(6, 1, use_bias=False)(x)
    model = keras.Model(inp, keras.layers.Dense(3, activation="softmax")(keras.layers.GlobalAveragePooling2D()(x)))
    spec = PreprocessSpec(16, 16, scale=(1 / 255,) * 3)
    x = np.random.default_rng(0).integers(0, 256, (40, 16, 16, 3), dtype=np.uint8)
    ctx = ExportContext(model, ["a", "b", "c"], spec, calibration=Images(x, None, spec, "train"))
    result = export_format(FORMATS["onnx-int8"], ctx, tmp_path)
    assert result.ok, result.error
    q = onnx.load(str(result.path))
    inits = {i.name: numpy_helper.to_array(i) for i in q.graph.initializer}
    dq = {n.output[0]: n.input[0] for n in q.graph.node if n.op_type == "DequantizeLinear"}
    peaks = {}
    for n in q.graph.node:
        if n.op_type in ("Conv", "Gemm", "MatMul"):
            w = inits[dq[n.input[1]]]
            assert w.dtype == np.int8
            depthwise = n.op_type == "Conv" and any(a.name == "group" and a.i > 1 for a in n.attribute)
            peaks[(n.op_type, depthwise)] = max(peaks.get((n.op_type, depthwise), 0), int(np.abs(w.astype(int)).max()))
            assert n.op_type == "MatMul" or (len(n.input) > 2 and n.input[2])  # every Conv/Gemm has a bias now
    assert peaks.pop(("Conv", True)) == 127
    assert peaks and all(p <= 64 for p in peaks.values()), peaks


def test_validation_runs_artifacts_as_a_device_does(full, run_dir, tmp_path):
    """Pixels at the model's size go through Classifier.predict, as on a device, whose pixel table settles
    rounding ties its own way; other sizes go as float input through Classifier.run."""
    from edgekit.convert.calibration import Images
    from edgekit.convert.validate import run_artifact
    export = run_dir / "export"
    # A normalisation that puts every pixel on a rounding tie of the int8 model's input (p - 0.5 steps).
    q = Classifier.load(export / "model_tflite-int8.tflite").engine.input
    spec = PreprocessSpec(32, 32, scale=(q.scale,) * 3, offset=(-(q.zero_point + 0.5) * q.scale,) * 3)
    model = tmp_path / "model_tflite-int8.tflite"
    shutil.copy(export / "model_tflite-int8.tflite", model)
    shutil.copy(export / "labels.txt", tmp_path / "labels.txt")
    (tmp_path / "preprocess.json").write_text(json.dumps(spec.to_dict()))
    clf = Classifier.load(model)
    assert clf._table.kind == "clip"
    rng = np.random.default_rng(8)
    # Noise alone can leave a saturated tiny model's quantized output unmoved by a one-step input shift; a
    # sweep of grey levels walks the output across its quantization steps, so some of them must move.
    levels = np.broadcast_to(np.arange(256, dtype=np.uint8)[:, None, None, None], (256, 32, 32, 3))
    noise = rng.integers(0, 256, (16, 32, 32, 3), dtype=np.uint8)
    at_size = Images(np.concatenate([noise, levels]), None, spec)
    float_path = np.concatenate([clf.run(b) for b in at_size.batches()])
    assert not np.array_equal(float_path, clf.predict(at_size.x))  # the ties move the answer here
    probs, _ = run_artifact(model, at_size)
    np.testing.assert_array_equal(probs, clf.predict(at_size.x))
    small = Images(at_size.x[:3, :16, :16], None, spec)
    probs, _ = run_artifact(model, small)
    np.testing.assert_array_equal(probs, np.concatenate([clf.run(b) for b in small.batches()]))


def test_a_runs_data_that_changed_since_training_is_named(tmp_path, monkeypatch):
    from types import SimpleNamespace
    from edgekit.convert import calibration
    (tmp_path / "run.json").write_text(json.dumps({"data": {"hash": "a" * 64}}))
    said = []
    monkeypatch.setattr(calibration.console, "print", lambda text, **kw: said.append(text))
    source = SimpleNamespace(kind="run", data="d.tar", path=tmp_path)
    calibration._warn_if_changed(source, SimpleNamespace(data_hash="a" * 64), "d.tar")
    assert said == []
    calibration._warn_if_changed(source, SimpleNamespace(data_hash="b" * 64), "d.tar")
    assert len(said) == 1 and "d.tar has changed since" in said[0] and "aaaaaaaaaaaa then, bbbbbbbbbbbb now" in said[0]
    calibration._warn_if_changed(source, SimpleNamespace(data_hash="b" * 64), "other.tar")  # other data: no claim
    assert len(said) == 1
