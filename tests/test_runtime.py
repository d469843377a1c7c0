"""edgekit_runtime on real tiny models: a tf_keras net converted here to float/int8/16x8 TFLite and ONNX.

The convert stage is not used: the artifacts are built with the plain TF converter and tf2onnx, so
these tests pin the runtime's own behaviour (parity with Keras, quantization handling, batching,
metadata, directory handling, CLI errors, no TensorFlow on the device).
"""
from __future__ import annotations

import dataclasses
import io
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from testdata import CLASSES, make_image
from edgekit_runtime import (Classifier, EngineUnavailable, ImageError, InputError, ModelError, PreprocessSpec,
                             SpecError, load_rgb, resize_rgb)
from edgekit_runtime.cli import main
from edgekit_runtime.tflite_meta import read_metadata

pytestmark = pytest.mark.tf  # trains, converts or loads models with TensorFlow

SIZE = 16
LABELS = sorted(CLASSES)  # blue, green, red: output order, as training writes labels.txt
SPEC = PreprocessSpec(height=SIZE, width=SIZE, scale=(1 / 127.5,) * 3, offset=(-1.0,) * 3)


def reference_input(paths, spec=SPEC):
    """The model input computed from the public primitives, independently of Classifier."""
    return np.stack([spec.normalize(resize_rgb(load_rgb(str(p), target_size=spec.size), spec.size)) for p in paths])


def embed_tflite_metadata(model: bytes, name: str, payload: bytes) -> bytes:
    """What the convert stage does: a Model.metadata entry pointing at a new buffer."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema
    m = schema.ModelT.InitFromPackedBuf(bytearray(model), 0)
    buf = schema.BufferT()
    buf.data = np.frombuffer(payload, np.uint8)
    m.buffers.append(buf)
    entry = schema.MetadataT()
    entry.name, entry.buffer = name, len(m.buffers) - 1
    m.metadata = (m.metadata or []) + [entry]
    builder = flatbuffers.Builder(1024)
    builder.Finish(m.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


@pytest.fixture(scope="module")
def art(tmp_path_factory):
    import edgekit  # noqa: F401  (selects tf_keras)
    import tensorflow as tf
    import tf2onnx
    import tf_keras as keras

    root = tmp_path_factory.mktemp("runtime")
    rng = np.random.default_rng(0)
    # training data: the colour-class images of conftest, learnable in a few epochs
    y = np.arange(120) % 3
    x = np.stack([np.asarray(make_image(rng, LABELS[c], SIZE)) for c in y])
    xf = SPEC.normalize(x)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.layers.Input((SIZE, SIZE, 3)),
                              keras.layers.Conv2D(8, 3, activation="relu"),
                              keras.layers.Conv2D(8, 3, strides=2, activation="relu"),
                              keras.layers.GlobalAveragePooling2D(),
                              keras.layers.Dense(3, activation="softmax")])
    model.compile(keras.optimizers.Adam(0.02), "sparse_categorical_crossentropy")
    model.fit(xf, y, epochs=12, batch_size=20, verbose=0)
    # Soften the head: the argmax stays, but probabilities move off 0/1, where a quantized output
    # would saturate and hide its error.
    kernel, bias = model.layers[-1].get_weights()
    model.layers[-1].set_weights([kernel * 0.04, bias * 0.04])

    def rep():
        for i in range(0, 60, 2):
            yield [xf[i:i + 1]]

    def tflite(**kw):
        conv = tf.lite.TFLiteConverter.from_keras_model(model)
        if kw:
            conv.optimizations = [tf.lite.Optimize.DEFAULT]
            conv.representative_dataset = rep
            conv.target_spec.supported_ops = [kw["ops"]]
            conv.inference_input_type = conv.inference_output_type = kw["io"]
        return conv.convert()

    export = root / "export"
    export.mkdir()
    (export / "model_fp32.tflite").write_bytes(tflite())
    (export / "model_int8.tflite").write_bytes(tflite(ops=tf.lite.OpsSet.TFLITE_BUILTINS_INT8, io=tf.uint8))
    (export / "model_16x8.tflite").write_bytes(tflite(
        ops=tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8, io=tf.int16))
    proto, _ = tf2onnx.convert.from_keras(model, input_signature=(tf.TensorSpec((None, SIZE, SIZE, 3), tf.float32,
                                                                                 name="image"),), opset=17)
    (export / "model_fp32.onnx").write_bytes(proto.SerializeToString())
    (export / "labels.txt").write_text("\n".join(LABELS) + "\n")
    (export / "preprocess.json").write_text(json.dumps(SPEC.to_dict()))

    odd = root / "odd"  # models the runtime must refuse or treat specially, each with the side files
    odd.mkdir()
    fixed = tf.function(lambda t: model(t, training=False)).get_concrete_function(
        tf.TensorSpec((1, SIZE, SIZE, 3), tf.float32))
    (odd / "static_batch.tflite").write_bytes(tf.lite.TFLiteConverter.from_concrete_functions([fixed], model).convert())
    gray = keras.Sequential([keras.layers.Input((SIZE, SIZE, 1)), keras.layers.Conv2D(4, 3, activation="relu"),
                             keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3, activation="softmax")])
    (odd / "gray.tflite").write_bytes(tf.lite.TFLiteConverter.from_keras_model(gray).convert())
    dense = keras.Sequential([keras.layers.Input((8,)), keras.layers.Dense(3, activation="softmax")])
    (odd / "vector_input.tflite").write_bytes(tf.lite.TFLiteConverter.from_keras_model(dense).convert())
    for name in ("labels.txt", "preprocess.json"):
        shutil.copy(export / name, odd / name)

    # test images: other sizes than the model's, JPEG and PNG, the class colour dominant
    images = root / "images"
    images.mkdir()
    paths = []
    for i in range(9):
        label = LABELS[i % 3]
        path = images / f"{i}_{label}.{'png' if i % 2 else 'jpg'}"
        make_image(rng, label, size=[16, 24, 40][i // 3]).resize((37 + i, 29 + 2 * i)).save(path, quality=95)
        paths.append(path)
    ref = model(reference_input(paths), training=False).numpy()
    return SimpleNamespace(root=root, export=export, odd=odd, paths=paths, ref=ref, model=model, gray=gray)


def load(art, fmt, **kw):
    return Classifier.load(art.export, format=fmt, **kw)


# ------------------------------------------------------------------ parity with the Keras model
@pytest.mark.parametrize("fmt,engine", [("fp32.tflite", "litert"), ("onnx", "onnx")])
def test_float_artifacts_match_keras(art, fmt, engine):
    clf = load(art, fmt, threads=1)
    assert clf.engine_name == engine and clf.input_dtype == np.float32 and clf.engine.dynamic_batch
    assert clf.labels == LABELS and clf.spec == SPEC and clf.input_shape == (SIZE, SIZE, 3)
    probs = clf.predict([str(p) for p in art.paths])
    assert probs.dtype == np.float32 and probs.shape == (9, 3)
    np.testing.assert_allclose(probs, art.ref, atol=1e-5)
    assert (probs.argmax(1) == art.ref.argmax(1)).all()
    # the model learnt the colours, so top-1 agreement is a real check, not a coin toss on near-ties
    assert (art.ref.argmax(1) == [LABELS.index(p.stem.split("_")[1]) for p in art.paths]).all()


@pytest.mark.parametrize("fmt,dtype,atol", [("int8", np.uint8, 0.02), ("16x8", np.int16, 0.005)])
def test_quantized_artifacts_track_keras(art, fmt, dtype, atol):
    clf = load(art, fmt)
    info = clf.engine.input
    assert clf.input_dtype == dtype and info.quantized and info.scale > 0
    probs = clf.predict(art.paths)
    assert (probs.argmax(1) == art.ref.argmax(1)).all()
    assert np.abs(probs - art.ref).max() < atol
    assert np.allclose(probs.sum(1), 1, atol=0.05)  # dequantized back to probabilities


def test_run_takes_float_input_and_quantizes_itself(art):
    """The convert stage's validation calls run() with float input it preprocessed itself. Float models give
    predict()'s answer exactly; the int8 model's pixel table settles rounding ties that run()'s float
    quantization leaves to float32 noise, so there the two may differ by one output step."""
    x = reference_input(art.paths)
    for fmt in ("fp32.tflite", "int8", "16x8", "onnx"):
        clf = load(art, fmt)
        out = clf.engine.output
        step = out.scale if out.quantized else 0.0
        np.testing.assert_allclose(clf.run(x), clf.predict(art.paths), rtol=0, atol=step * 1.001)
        np.testing.assert_array_equal(clf.preprocess(art.paths), x)
    clf = load(art, "int8")
    # by hand: TFLite's quantization formula on the input, dequantization on the output
    q_in, q_out = clf.engine.input, clf.engine.output
    q = np.clip(np.rint(x / q_in.scale) + q_in.zero_point, 0, 255).astype(np.uint8)
    by_hand = (clf.engine.run(q).astype(np.float32) - q_out.zero_point) * q_out.scale
    np.testing.assert_allclose(clf.run(x), by_hand, atol=1e-7)
    with pytest.raises(InputError, match="float model input"):
        clf.run((x * 100).astype(np.uint8))
    with pytest.raises(InputError, match="shape"):
        clf.run(x[:, :8])


@pytest.mark.parametrize("scale,offset,order", [((0.017, 0.0175, 0.0171), (-2.1, -2.03, -1.8), "BGR"),
                                                ((0.017, 0.0175, 0.0171), (-2.1, -2.03, -1.8), "RGB"),
                                                ((1 / 127.5,) * 3, (-1.0,) * 3, "RGB"), ((1 / 255,) * 3, (0.0,) * 3, "BGR")])
def test_normalize_is_float32_arithmetic_per_element(scale, offset, order):
    """Into a buffer or not, shared or per-channel parameters: float32(pixel) * scale + offset, channel by channel."""
    spec = PreprocessSpec(8, 8, scale=scale, offset=offset, channel_order=order)
    pixels = np.random.default_rng(2).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    buf = np.empty(pixels.shape, np.float32)
    assert spec.normalize(pixels, out=buf) is buf
    np.testing.assert_array_equal(buf, spec.normalize(pixels))
    src = pixels[..., ::-1] if order == "BGR" else pixels
    want = src.astype(np.float32) * np.asarray(scale, np.float32) + np.asarray(offset, np.float32)
    np.testing.assert_array_equal(buf, want)
    assert buf.dtype == np.float32


# ---------------------------------------------------------------------------------- batching
@pytest.mark.parametrize("where,fmt", [("export", "fp32.tflite"), ("export", "int8"), ("export", "onnx"),
                                       ("odd", "static_batch")])
def test_batch_equals_per_image(art, where, fmt):
    clf = Classifier.load(getattr(art, where), format=fmt)
    assert clf.engine.dynamic_batch == (fmt != "static_batch")
    together = clf.predict(art.paths)
    one_by_one = np.concatenate([clf.predict(p) for p in art.paths])
    np.testing.assert_allclose(together, one_by_one, atol=1e-6)
    np.testing.assert_allclose(clf.predict(art.paths, batch_size=4), together, atol=1e-6)
    np.testing.assert_allclose(together, art.ref, atol=0.02)


def test_predict_accepts_paths_pil_arrays_bytes_and_odd_modes(art):
    clf = load(art, "fp32.tflite")
    path = art.paths[0]
    want = clf.predict(str(path))
    img = Image.open(path)
    for same in (path, path.read_bytes(), load_rgb(str(path), target_size=SPEC.size)):
        np.testing.assert_allclose(clf.predict(same), want, atol=1e-6)
    arr = resize_rgb(load_rgb(str(path), target_size=SPEC.size), SPEC.size)
    np.testing.assert_allclose(clf.predict(arr), want, atol=1e-6)
    assert clf.predict(np.stack([arr, arr, arr])).shape == (3, 3)
    assert clf.predict([]).shape == (0, 3)
    # grayscale, RGBA and palette images and arrays of any size are converted, not refused
    for odd in (img.convert("L"), img.convert("RGBA"), img.convert("P"), np.zeros((50, 70), np.uint8),
                np.full((33, 21, 4), 200, np.uint8)):
        p = clf.predict(odd)
        assert p.shape == (1, 3) and np.isfinite(p).all()
    with pytest.raises(InputError, match="uint8"):
        clf.predict(np.zeros((16, 16, 3), np.float32))
    with pytest.raises(InputError):
        clf.predict(42)
    with pytest.raises(ImageError, match="nope.jpg: no such file"):
        clf.predict([path, art.root / "nope.jpg"])


def test_top_k(art):
    clf = load(art, "onnx")
    probs = clf.predict(art.paths[:2])
    top = clf.top_k(art.paths[:2], k=2)
    assert [len(t) for t in top] == [2, 2]
    for row, t in zip(probs, top):
        assert t[0] == (LABELS[int(row.argmax())], pytest.approx(float(row.max())))
        assert t[0][1] >= t[1][1]
    assert len(clf.top_k(art.paths[0], k=10)[0]) == 3


def test_one_channel_model_gets_pillow_luma(art):
    clf = Classifier.load(art.odd, format="gray")
    assert clf.input_shape == (SIZE, SIZE, 1)
    gray = np.stack([np.asarray(Image.fromarray(resize_rgb(load_rgb(str(p), target_size=SPEC.size), SPEC.size))
                                .convert("L"), np.float32) for p in art.paths])[..., None]
    ref = art.gray(gray / 127.5 - 1.0, training=False).numpy()
    np.testing.assert_allclose(clf.predict(art.paths), ref, atol=1e-5)


def test_huge_jpeg_is_decoded_at_reduced_scale(art, tmp_path):
    big = tmp_path / "big.jpg"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (1800, 2400, 3), np.uint8)).save(big, quality=80)
    clf = load(art, "fp32.tflite")
    with Image.open(big) as im:  # the JPEG draft mode the runtime relies on, at 1/8 scale for 16 px
        assert im.draft("RGB", (SIZE, SIZE)) is not None
    np.testing.assert_array_equal(clf.preprocess(big), reference_input([big]))


# ---------------------------------------------------------------------- metadata and directories
def test_embedded_metadata_replaces_side_files(art, tmp_path):
    import onnx
    payload = json.dumps({"labels": LABELS, "preprocess": SPEC.to_dict()}).encode()
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "a.tflite").write_bytes(embed_tflite_metadata((art.export / "model_fp32.tflite").read_bytes(),
                                                          "edgekit", payload))
    proto = onnx.load(str(art.export / "model_fp32.onnx"))
    for key, value in (("labels", json.dumps(LABELS)), ("preprocess", json.dumps(SPEC.to_dict()))):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(bare / "b.onnx"))
    # the TFLite-Support way: files zipped onto the end of the model
    zipped = io.BytesIO()
    with zipfile.ZipFile(zipped, "w") as z:
        z.writestr("labels.txt", "\n".join(LABELS))
        z.writestr("preprocess.json", json.dumps(SPEC.to_dict()))
    (bare / "c.tflite").write_bytes((art.export / "model_int8.tflite").read_bytes() + zipped.getvalue())
    assert json.loads(read_metadata(bare / "a.tflite", ["edgekit"])["edgekit"])["labels"] == LABELS
    assert read_metadata(art.export / "model_fp32.tflite", ["edgekit"]) == {}
    for name in ("a", "b", "c"):
        clf = Classifier.load(bare, format=name)
        assert clf.labels == LABELS and clf.spec == SPEC and "embedded" in clf.info.spec_source
        np.testing.assert_allclose(clf.predict(art.paths), art.ref, atol=1e-5 if name != "c" else 0.02)
    # files beside the model win over what is embedded: they are what the user sees and edits
    (bare / "labels.txt").write_text("B\nG\nR\n")
    assert Classifier.load(bare / "a.tflite").labels == ["B", "G", "R"]
    (bare / "labels.txt").write_text("just\ntwo\n")
    with pytest.raises(ModelError, match="2 labels but a.tflite outputs 3"):
        Classifier.load(bare / "a.tflite")
    with pytest.raises(SpecError, match="no preprocess.json"):
        Classifier.load(shutil.copy(art.export / "model_fp32.tflite", tmp_path / "lone.tflite"))


def test_directory_choice_and_manifest(art, tmp_path):
    with pytest.raises(ModelError, match="several models") as err:
        Classifier.load(art.export)
    assert "model_int8.tflite" in str(err.value) and "model_fp32.onnx" in str(err.value)
    with pytest.raises(ModelError, match="ambiguous"):
        Classifier.load(art.export, format="fp32")
    with pytest.raises(ModelError, match="no model matches format 'fp64'"):
        Classifier.load(art.export, format="fp64")
    assert Classifier.load(art.export, format="model_int8.tflite").input_dtype == np.uint8
    d = tmp_path / "with_manifest"
    shutil.copytree(art.export, d)
    (d / "manifest.json").write_text(json.dumps({"artifacts": [
        {"format": "tflite_int8", "file": "model_int8.tflite"}, {"format": "onnx_fp32", "file": "model_fp32.onnx"}]}))
    assert Classifier.load(d, format="tflite_int8").input_dtype == np.uint8
    assert Classifier.load(d, format="onnx_fp32").engine_name == "onnx"
    single = tmp_path / "single"
    single.mkdir()
    for name in ("model_int8.tflite", "labels.txt", "preprocess.json"):
        shutil.copy(art.export / name, single / name)
    assert Classifier.load(single).engine.path.name == "model_int8.tflite"


def test_engine_choice(art):
    with pytest.raises(EngineUnavailable, match=r"pip install 'edgekit-runtime\[tflite\]'"):
        load(art, "int8", engine="tflite")  # tflite-runtime needs numpy<2: not installed here
    with pytest.raises(EngineUnavailable, match="cannot run .tflite"):
        load(art, "int8", engine="onnx")
    assert load(art, "int8", engine="litert", threads=2).engine.threads == 2


# -------------------------------------------------------------------------------------- CLI
def test_cli_predict_text_and_json(art, capsys):
    paths = [str(p) for p in art.paths[:3]]
    assert main(["predict", str(art.export), *paths, "--format", "int8", "--json", "--top-k", "2"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["engine"] == "litert" and [r["image"] for r in out["predictions"]] == paths
    assert [r["top_k"][0]["label"] for r in out["predictions"]] == [LABELS[i] for i in art.ref[:3].argmax(1)]
    assert len(out["predictions"][0]["top_k"]) == 2
    assert main(["predict", str(art.export / "model_fp32.onnx"), paths[0], "--threads", "1"]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith(f"{paths[0]}: {LABELS[art.ref[0].argmax()]} ") and captured.err == ""
    assert main(["info", str(art.export), "--format", "16x8"]) == 0
    assert "int16" in capsys.readouterr().out


def bad_inputs(art, tmp: Path):
    """(argv, expected message fragment) for every kind of bad input."""
    img = str(art.paths[0])
    jpeg = art.paths[0] if art.paths[0].suffix == ".jpg" else art.paths[2]
    (tmp / "truncated.jpg").write_bytes(jpeg.read_bytes()[: jpeg.stat().st_size // 2])
    (tmp / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(200))
    (tmp / "junk.tflite").write_bytes(os.urandom(300))
    blob = (art.export / "model_fp32.tflite").read_bytes()
    (tmp / "truncated.tflite").write_bytes(blob[: len(blob) // 2])
    (tmp / "corrupt.onnx").write_bytes(b"not a protobuf" * 10)
    (tmp / "empty").mkdir()
    (tmp / "model.pt").write_bytes(b"x")
    model = str(art.export / "model_fp32.tflite")
    return [
        (["predict", model, str(tmp / "missing.jpg")], "missing.jpg: no such file"),
        (["predict", model, str(tmp / "truncated.jpg")], "truncated.jpg: cannot decode image"),
        (["predict", model, str(tmp / "corrupt.png")], "corrupt.png:"),
        (["predict", model, str(tmp)], "is a directory"),
        (["predict", str(tmp / "missing.tflite"), img], "no such model file"),
        (["predict", str(tmp / "junk.tflite"), img], "not a loadable TFLite model"),
        (["predict", str(tmp / "truncated.tflite"), img], "not a loadable TFLite model"),
        (["predict", str(tmp / "corrupt.onnx"), img], "not a loadable ONNX model"),
        (["predict", str(tmp / "model.pt"), img], "not a model file the runtime knows"),
        (["predict", str(tmp / "empty"), img], "no .tflite or .onnx model in this directory"),
        (["predict", str(art.export), img], "several models"),
        (["predict", str(art.odd), img, "--format", "vector_input"], "not an image batch"),
        (["predict", model, img, "--engine", "tflite"], "pip install 'edgekit-runtime[tflite]'"),
    ]


def test_cli_bad_input_is_one_line_and_exit_2(art, tmp_path, capsys):
    for argv, fragment in bad_inputs(art, tmp_path):
        code = main(argv)
        captured = capsys.readouterr()
        lines = captured.err.strip().splitlines()
        assert code == 2, (argv, captured.err)
        assert len(lines) == 1 and lines[0].startswith("edge-run: error: ") and fragment in lines[0], (argv, lines)
        assert captured.out == ""


def test_cli_predict_classifies_every_good_image_and_names_the_bad(art, tmp_path, capsys):
    """One unreadable file among many: the others are still classified, each bad one is a line on stderr."""
    bad_inputs(art, tmp_path)  # writes truncated.jpg, corrupt.png
    good = [str(p) for p in art.paths[:5]]
    images = [good[0], str(tmp_path / "truncated.jpg"), *good[1:3], str(tmp_path), str(tmp_path / "corrupt.png"), *good[3:]]
    model = str(art.export / "model_int8.tflite")
    assert main(["predict", model, *images, "--batch-size", "2"]) == 2
    captured = capsys.readouterr()
    assert [line.split(":")[0] for line in captured.out.splitlines()] == good  # in order, none lost
    err = captured.err.strip().splitlines()
    assert [line.split(": ")[2] for line in err[:3]] == [str(tmp_path / "truncated.jpg"), str(tmp_path),
                                                         str(tmp_path / "corrupt.png")]
    assert err[3] == "edge-run: 3 of 8 images could not be read; the other 5 were classified."
    assert main(["predict", model, *images, "--json"]) == 2
    out = json.loads(capsys.readouterr().out)
    assert [r["image"] for r in out["predictions"]] == good
    assert [f["image"] for f in out["failed"]] == [images[1], images[4], images[5]]
    expected = [LABELS[i] for i in art.ref[:5].argmax(1)]
    assert [r["top_k"][0]["label"] for r in out["predictions"]] == expected


def test_cli_in_a_real_process(art, tmp_path):
    """The installed console script: exit codes, one stderr line, no traceback, no native log lines."""
    exe = shutil.which("edge-run", path=str(Path(sys.executable).parent)) or "edge-run"
    cases = bad_inputs(art, tmp_path)
    for argv, fragment in (cases[1], cases[6]):  # a truncated JPEG, a truncated model
        proc = subprocess.run([exe, *argv], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert proc.stderr.count("\n") == 1 and fragment in proc.stderr
    proc = subprocess.run([exe, "predict", str(art.export / "model_int8.tflite"), str(art.paths[0])],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert proc.stdout.startswith(str(art.paths[0]))


def test_device_process_never_imports_tensorflow(art):
    code = ("import sys, edgekit_runtime\n"
            f"clf = edgekit_runtime.Classifier.load({str(art.export / 'model_int8.tflite')!r})\n"
            f"print(clf.top_k({str(art.paths[0])!r}, k=1)[0][0][0])\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'tf_keras', 'keras', 'edgekit')))")
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 0, proc.stderr
    label, modules = proc.stdout.strip().splitlines()
    print("modules of TensorFlow/edgekit in the device process:", modules)
    assert label == LABELS[art.ref[0].argmax()]
    assert modules == "[]"


def test_edge_predict_is_the_runtime_cli(art, capsys):
    """`edge predict` (main CLI) prints what `edge-run predict` prints and exits like it on bad input."""
    from typer.testing import CliRunner
    from edgekit.cli import app
    from edgekit_runtime.cli import main as run_main
    assert run_main(["predict", str(art.export), str(art.paths[0]), "--format", "int8", "--json"]) == 0
    expected = json.loads(capsys.readouterr().out)
    result = CliRunner().invoke(app, ["predict", str(art.export), str(art.paths[0]), "--format", "int8", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == expected
    result = CliRunner().invoke(app, ["predict", str(art.export), str(art.paths[0])])
    assert result.exit_code == 2 and "holds several models" in result.output


@pytest.mark.parametrize("order", ["RGB", "BGR"])
def test_integer_input_lookup_equals_the_float_path(art, order):
    """predict() looks pixels up in a per-channel table for integer-input models; it must give exactly what
    normalising then quantizing (run on preprocess) gives, with per-channel scales and either channel order."""
    spec = PreprocessSpec(SIZE, SIZE, scale=(0.0171, 0.0175, 0.0174), offset=(-2.1, -2.03, -1.8), channel_order=order)
    for fmt in ("int8", "16x8"):
        clf = load(art, fmt, spec=spec)
        table = clf._table.table
        assert table.shape == (3, 256) and not (table[0] == table[2]).all()
        np.testing.assert_array_equal(clf.predict(art.paths), clf.run(clf.preprocess(art.paths)))
    assert load(art, "fp32.tflite")._table is None


@pytest.mark.parametrize("fmt", ["fp32.tflite", "int8", "16x8", "fp32.onnx"])
def test_frames_at_model_size_go_straight_into_the_engine(art, fmt):
    """A camera loop's frames (uint8 at the model's size: one array, a list of one, a batch) are written
    straight into the engine's input buffer; the result equals looking every pixel up in the model's table
    (or the float path for float models) for every table kind (a [-1, 1] clip into uint8, the same table in
    int16, a per-channel BGR table, float normalisation), repeatedly (buffers reused)."""
    from edgekit_runtime.pixel_table import PixelTable
    rng = np.random.default_rng(3)
    frames = rng.integers(0, 256, (4, SIZE, SIZE, 3), dtype=np.uint8)
    bgr = PreprocessSpec(SIZE, SIZE, scale=(0.0171, 0.0175, 0.0174), offset=(-2.1, -2.03, -1.8), channel_order="BGR")
    for spec in (SPEC, bgr):
        clf = load(art, fmt, spec=spec)
        if clf._table is None:
            want = clf.run(clf.preprocess(list(frames)))
        else:  # plain fancy indexing, channel by channel
            t, order = clf._table.table, ([2, 1, 0] if spec.channel_order == "BGR" else [0, 1, 2])
            x = np.stack([t[k][frames[..., order[k]]] for k in range(3)], axis=-1)
            want = clf._to_probabilities(clf.engine.run(x))
        for _ in range(2):
            np.testing.assert_array_equal(clf.predict(frames), want)
            np.testing.assert_array_equal(clf.predict(frames[1]), want[1:2])
            np.testing.assert_array_equal(clf.predict([frames[2]]), want[2:3])
            np.testing.assert_array_equal(clf.predict(frames, batch_size=3), want)  # two batches: decode path
        first = clf.predict(frames[0])
        clf.predict(frames[1])
        np.testing.assert_array_equal(first, want[:1])  # a result is the caller's: the next call leaves it alone
        if isinstance(clf._table, PixelTable):
            assert clf._table.kind == (None if spec is bgr else "clip" if fmt == "int8" else "shared")
    table = PixelTable(np.stack([np.arange(256, dtype=np.uint8)[::-1]] * 3))  # shared, through bytes.translate
    out = np.empty(frames.shape, np.uint8)
    table.fill(frames, out)
    np.testing.assert_array_equal(out, 255 - frames)


@pytest.mark.parametrize("shape", [(8, 8), (5, 11), (16, 9), (1, 1), (3, 16)])
def test_enlarging_matches_the_training_pipeline_in_float(art, shape):
    """Images smaller than the model input are enlarged in float exactly as training's tf.image.resize does,
    so a device sees the input the model was validated on (not one rounded to uint8 on the way)."""
    import tensorflow as tf
    from edgekit.train.pipeline import to_model_input
    from edgekit_runtime.image import enlarge
    rng = np.random.default_rng(sum(shape))
    pixels = rng.integers(0, 256, (3, *shape, 3), dtype=np.uint8)
    want = tf.image.resize(tf.constant(pixels, tf.float32), (SIZE, SIZE), method="bilinear").numpy()
    got = np.stack([enlarge(p, (SIZE, SIZE)) for p in pixels])
    np.testing.assert_array_equal(got, want)  # bit for bit: int8 inputs sit on rounding ties
    for fmt in ("fp32.tflite", "int8"):
        clf = load(art, fmt)
        x = clf.preprocess(list(pixels))
        np.testing.assert_array_equal(x, to_model_input(tf.constant(pixels), SPEC).numpy())
        np.testing.assert_array_equal(clf.predict(list(pixels)), clf.run(x))  # the table is skipped for float pixels


def test_rounding_ties_settle_towards_a_clip(art):
    """[-1, 1] into uint8 (scale 2/255, zero point 127) puts every pixel on a rounding tie (p - 0.5), which
    float32 noise scatters between p and p - 1; the table takes min(p, 254) instead, as near to every exact
    value, and off ties nothing moves."""
    from edgekit_runtime.pixel_table import PixelTable, snap_to_clip
    levels = np.arange(256)
    scale = np.float32(2 / 255)
    x = levels.astype(np.float32) * np.float32(1 / 127.5) + np.float32(-1)  # the normalisation, in float32
    float_path = np.stack([np.clip(np.rint(x / scale) + 127, 0, 255).astype(np.uint8)] * 3)
    exact = np.stack([(levels / 127.5 - 1) / float(scale) + 127] * 3)
    assert (float_path[0] != np.minimum(levels, 254)).sum() == 16  # 32, 34, ..., 190: p - 1 there
    snapped = snap_to_clip(float_path, exact)
    np.testing.assert_array_equal(snapped, np.stack([np.minimum(levels, 254)] * 3))
    assert PixelTable(snapped).kind == "clip" and snapped.dtype == np.uint8
    assert np.abs(snapped - exact).max() <= np.abs(float_path - exact).max() + 1e-9
    # int8 input (--io int8): zero point -1 puts every pixel at p - 128.5; settled, min(p, 254) - 128
    as_int8 = np.stack([np.clip(np.rint(x / scale) - 1, -128, 127).astype(np.int8)] * 3)
    snapped8 = snap_to_clip(as_int8, exact - 128)
    np.testing.assert_array_equal(snapped8.astype(int), np.stack([np.minimum(levels, 254) - 128] * 3))
    assert PixelTable(snapped8).kind == "clip" and snapped8.dtype == np.int8
    off_tie = np.stack([np.clip(np.rint(levels * 0.9), 0, 255).astype(np.uint8)] * 3)
    assert snap_to_clip(off_tie, np.stack([levels * 0.9] * 3)) is off_tie
    # through the Classifier: the tiny model's int8 input sits on ties too; its predict equals the lookup
    clf = load(art, "int8")
    assert clf._table.kind == "clip"
    frames = np.random.default_rng(6).integers(0, 256, (3, SIZE, SIZE, 3), dtype=np.uint8)
    want = clf._to_probabilities(clf.engine.run(clf._table.table[0][frames]))
    np.testing.assert_array_equal(clf.predict(frames), want)


def test_lookup_shortcuts_give_the_same_input(art):
    """Tables that are the identity (uint8) or pixel - 128 (int8) are replaced by a copy or a flipped top bit."""
    from edgekit_runtime.pixel_table import table_kind
    levels = np.arange(256, dtype=np.uint8)
    flipped = np.bitwise_xor(levels, np.uint8(0x80)).view(np.int8)
    np.testing.assert_array_equal(flipped.astype(int), levels.astype(int) - 128)
    assert table_kind(np.stack([flipped] * 3)) == "minus128" and table_kind(np.stack([levels] * 3)) == "identity"
    assert table_kind(np.stack([levels, levels, levels[::-1]])) is None
    from edgekit_runtime.pixel_table import PixelTable
    frames = np.random.default_rng(5).integers(0, 256, (2, SIZE, SIZE, 3), dtype=np.uint8)
    clipped = [np.minimum(levels, 254),                                       # MobileNetV2 [-1, 1] into uint8
               np.clip(levels, 3, 250),
               (np.clip(levels.astype(int), 1, 254) - 128).astype(np.int8)]   # clipped, then - 128 (int8)
    for t in clipped:
        table = PixelTable(np.stack([t] * 3))
        assert table.kind == "clip"
        out = np.empty(frames.shape, t.dtype)
        table.fill(frames, out)
        np.testing.assert_array_equal(out, t[frames])
    clf = load(art, "int8")
    s, zp = clf.engine.input.scale, clf.engine.input.zero_point
    spec = PreprocessSpec(SIZE, SIZE, scale=(s,) * 3, offset=(-zp * s,) * 3)  # makes the table the identity
    clf = load(art, "int8", spec=spec)
    assert clf._table.kind == "identity"
    np.testing.assert_array_equal(clf.predict(art.paths), clf.run(clf.preprocess(art.paths)))
    frames = np.random.default_rng(4).integers(0, 256, (2, SIZE, SIZE, 3), dtype=np.uint8)
    kept = frames.copy()
    np.testing.assert_array_equal(clf.predict(frames), clf.run(clf.preprocess(list(frames))))
    np.testing.assert_array_equal(frames, kept)  # the caller's frames are read, never written


def _nchw_onnx(path: Path, weights: np.ndarray, bias: np.ndarray, size=(12, 10), channels_last=False) -> Path:
    """A channels-first (N, 3, H, W) ONNX classifier as PyTorch exports them: mean per channel → dense → softmax
    (or the same behind a transpose, taking channels-last input)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    h, w = size
    first = [helper.make_node("Transpose", ["pixels"], ["chw"], perm=[0, 3, 1, 2])] if channels_last else []
    shape = ["batch", h, w, 3] if channels_last else ["batch", 3, h, w]
    graph = helper.make_graph(
        first + [helper.make_node("GlobalAveragePool", ["chw" if channels_last else "pixels"], ["pooled"]),
         helper.make_node("Flatten", ["pooled"], ["flat"]),
         helper.make_node("Gemm", ["flat", "W", "b"], ["logits"]),
         helper.make_node("Softmax", ["logits"], ["probs"], axis=1)],
        "nchw", [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", weights.shape[1]])],
        [numpy_helper.from_array(weights.astype(np.float32), "W"), numpy_helper.from_array(bias.astype(np.float32), "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_a_channels_first_onnx_model_is_fed_nchw(tmp_path):
    pytest.importorskip("onnxruntime")
    rng = np.random.default_rng(3)
    weights, bias = rng.normal(size=(3, 4)) * 4, rng.normal(size=4)
    model = _nchw_onnx(tmp_path / "nchw.onnx", weights, bias)
    # PyTorch's normalisation (x/255 - mean) / std, as scale and offset
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    spec = PreprocessSpec(height=12, width=10, scale=tuple(1 / (255 * std)), offset=tuple(-mean / std),
                          layout="NCHW")
    clf = Classifier.load(model, labels=list("abcd"), spec=spec)
    assert clf.engine.layout == "NCHW" and clf.input_shape == (12, 10, 3) and "NCHW" in repr(clf)

    frames = rng.integers(0, 256, size=(5, 12, 10, 3), dtype=np.uint8)
    x = frames.astype(np.float64) / 255
    x = (x - mean) / std                                   # channels-last here: the model sees it transposed
    logits = x.mean(axis=(1, 2)) @ weights + bias
    expect = np.exp(logits - logits.max(1, keepdims=True))
    expect /= expect.sum(1, keepdims=True)
    got = clf.predict(frames)                              # the camera path (frames at the model's size)
    np.testing.assert_allclose(got, expect, atol=1e-5)
    buffer = clf.engine._nchw
    np.testing.assert_allclose(clf.predict(frames), expect, atol=1e-5)
    assert clf.engine._nchw is buffer                      # transposed into the same buffer, frame after frame
    images = [Image.fromarray(f) for f in frames]          # the decode path
    np.testing.assert_allclose(clf.predict(images), expect, atol=1e-5)
    np.testing.assert_allclose(clf.run(clf.preprocess(images)), expect, atol=1e-5)

    # the model file's own shape decides how it is fed: one export holds the NCHW ONNX model and the channels-last
    # TFLite model onnx2tf made of it, under one preprocess.json that says NCHW
    nhwc = _nchw_onnx(tmp_path / "nhwc.onnx", weights, bias, channels_last=True)
    for given in (dataclasses.replace(spec, layout="NHWC"), spec):
        same = Classifier.load(nhwc, labels=list("abcd"), spec=given)
        assert same.engine.layout == "NHWC"
        np.testing.assert_allclose(same.predict(frames), expect, atol=1e-5)   # the two layouts agree
