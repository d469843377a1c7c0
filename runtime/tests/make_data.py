"""Regenerate runtime/tests/data/ (needs the full edgekit venv with TensorFlow; the tests that read it do not).

    .venv/bin/python runtime/tests/make_data.py

A tiny Keras classifier (16x16 RGB, 3 colour classes) trained for a few steps, converted by `edge convert`'s own
library to tflite-fp32, tflite-int8 and onnx-fp32 with embedded labels and preprocessing, and what
edgekit_runtime answers on the images images.py draws: the runtime's own tests (`make test-runtime`) then
check a TensorFlow-free install against these files.
"""
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent.parent / "tests"))

import numpy as np  # noqa: E402
import tf_keras as keras  # noqa: E402

from images import CLASSES, SIZE, images  # noqa: E402
from testdata import write_folder  # noqa: E402

FORMATS = ("tflite-fp32", "tflite-int8", "onnx-fp32")


def main() -> None:
    from edgekit.convert import ConvertConfig, convert
    from edgekit_runtime import Classifier
    out = HERE / "data"
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        folder = write_folder(tmp / "folder", per_class_train=24, per_class_test=6, size=SIZE)
        x, y = images(60, seed=1)
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.layers.Input((SIZE, SIZE, 3)), keras.layers.Conv2D(4, 3, activation="relu"),
                                  keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(len(CLASSES)),
                                  keras.layers.Softmax()])
        model.compile(keras.optimizers.Adam(0.05), "sparse_categorical_crossentropy", metrics=["accuracy"])
        model.fit((x.astype(np.float32) / 255.0), y, epochs=30, verbose=0)
        model.save(tmp / "model.keras")
        (tmp / "labels.txt").write_text("\n".join(CLASSES) + "\n")
        report = convert(ConvertConfig(tmp / "model.keras", formats=",".join(FORMATS), data=str(folder),
                                       input_size=(SIZE, SIZE), scale=(1 / 255.0,) * 3, offset=(0.0,) * 3,
                                       labels=tmp / "labels.txt", out=tmp / "export", calib_samples=30, val_samples=18))
        assert report.all_passed, [e.get("error") or e.get("mismatches") for e in report.entries]
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir()
        expected = {"classes": CLASSES, "artifacts": {}}
        test_x, _ = images(12, seed=2)
        for entry in report.manifest["artifacts"]:
            shutil.copy2(tmp / "export" / entry["file"], out / entry["file"])
            clf = Classifier.load(out / entry["file"])   # labels and preprocessing from the embedded metadata
            expected["artifacts"][entry["file"]] = np.round(clf.predict(test_x), 6).tolist()
        (out / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")
    print("wrote", ", ".join(sorted(p.name for p in out.iterdir())))


if __name__ == "__main__":
    main()
