"""Shared by the int8 prototypes (scripts/qat_faithful.py, scripts/act_equalize.py): a run's CIFAR-10 images as its
model takes them, and TFLiteConverter's own full-integer model of a tf_keras model scored against the float answers."""
import os

import numpy as np


def images(run: str):
    """(train, test, 500 calibration images drawn from train with seed 0), preprocessed as the run's model expects."""
    from edgekit.train.data import load_dataset
    from edgekit_runtime import PreprocessSpec
    spec = PreprocessSpec.load(f"{run}/preprocess.json")
    data = load_dataset(os.environ["EDGE_CIFAR10"], (spec.height, spec.width))

    def prep(rows):
        x = np.asarray(rows[np.arange(len(rows))] if not isinstance(rows, np.ndarray) else rows, np.float32)
        return x * np.asarray(spec.scale, np.float32) + np.asarray(spec.offset, np.float32)
    x_train, x_test = prep(data.train.x), prep(data.test.x)
    rng = np.random.default_rng(0)
    return x_train, x_test, x_train[np.sort(rng.choice(len(x_train), 500, replace=False))]


def int8_agreement(model, x_cal, x_test, reference_top1) -> tuple:
    """(top-1 agreement with reference_top1 on x_test, the model bytes) of TFLiteConverter's full-integer model
    (float I/O) calibrated on x_cal."""
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([x_cal[i:i + 1]] for i in range(len(x_cal)))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    blob = conv.convert()
    it = Interpreter(model_content=blob, num_threads=2)
    i, o = it.get_input_details()[0], it.get_output_details()[0]
    it.resize_tensor_input(i["index"], (500,) + x_test.shape[1:])
    it.allocate_tensors()
    pred = []
    for s in range(0, len(x_test), 500):
        it.set_tensor(i["index"], x_test[s:s + 500])
        it.invoke()
        pred.append(it.get_tensor(o["index"]).argmax(1))
    return float(np.mean(np.concatenate(pred) == reference_top1)), blob
