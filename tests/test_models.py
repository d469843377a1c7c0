import numpy as np
import pytest
import tf_keras as keras

from edgekit.errors import EdgeError
from edgekit.train import models
from edgekit.train.presets import PRESETS, get_preset
from testdata import make_hub_module

pytestmark = pytest.mark.tf  # trains, converts or loads models with TensorFlow


def test_resnet8_is_the_mlperf_tiny_size():
    built = models.build(get_preset("resnet8"), 32, 10, weights="none", hub=None, alpha=1.0, dropout=0.0,
                         weight_decay=1e-4)
    assert 75_000 <= built.model.count_params() <= 80_000
    assert built.backbone is None and built.model.output_shape == (None, 10)


@pytest.mark.parametrize("name", [n for n in PRESETS if n != "resnet8"])
def test_every_transfer_preset_builds_tiny(name):
    built = models.build(get_preset(name), 32, 3, weights="none", hub=None, alpha=0.35, dropout=0.1, weight_decay=0)
    x = np.random.rand(2, 32, 32, 3).astype("float32")
    probs = built.model.predict(x, verbose=0)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    # the head shares its weights with the full model: same output from cached features
    np.testing.assert_allclose(built.head.predict(built.features.predict(x, verbose=0), verbose=0), probs, atol=1e-5)


def test_unknown_preset_suggests():
    with pytest.raises(EdgeError, match="Did you mean 'mobilenet_v2'"):
        get_preset("mobilenet-v2")


def test_weights_file_that_does_not_fit(tmp_path):
    other = models.build(get_preset("resnet8"), 32, 10, weights="none", hub=None, alpha=1, dropout=0, weight_decay=0)
    path = tmp_path / "r8.h5"
    other.model.save_weights(path)
    with pytest.raises(EdgeError, match="does not fit mobilenet_v2"):
        models.build(get_preset("mobilenet_v2"), 32, 3, weights=str(path), hub=None, alpha=0.35, dropout=0,
                     weight_decay=0)
    with pytest.raises(EdgeError, match="does not exist"):
        models.build(get_preset("mobilenet_v2"), 32, 3, weights=str(tmp_path / "missing.h5"), hub=None, alpha=0.35,
                     dropout=0, weight_decay=0)
    with pytest.raises(EdgeError, match="no ImageNet weights"):
        models.build(get_preset("resnet8"), 32, 3, weights="imagenet", hub=None, alpha=1, dropout=0, weight_decay=0)


def test_resnet8_weights_round_trip(tmp_path):
    a = models.build(get_preset("resnet8"), 32, 3, weights="none", hub=None, alpha=1, dropout=0, weight_decay=0)
    a.model.save_weights(tmp_path / "w.h5")
    b = models.build(get_preset("resnet8"), 32, 3, weights=str(tmp_path / "w.h5"), hub=None, alpha=1, dropout=0,
                     weight_decay=0)
    x = np.random.rand(1, 32, 32, 3).astype("float32")
    np.testing.assert_allclose(a.model.predict(x, verbose=0), b.model.predict(x, verbose=0), atol=1e-6)


def test_hub_local_module_and_offline_url(tmp_path):
    module = make_hub_module(tmp_path / "fv")
    built = models.build(get_preset("mobilenet_v2"), 32, 3, weights="none", hub=str(module), alpha=1, dropout=0,
                         weight_decay=0)
    assert built.features.output_shape == (None, 8)
    with pytest.raises(EdgeError, match="can't be reached.*local directory"):
        models.hub_layer("https://tfhub.dev/google/imagenet/mobilenet_v2_100_160/feature_vector/5", trainable=False)
    with pytest.raises(EdgeError, match="neither a URL nor an existing directory"):
        models.hub_layer(str(tmp_path / "nothing"), trainable=False)


def test_fine_tune_unfreezes_top_layers_but_not_batchnorm():
    built = models.build(get_preset("mobilenet_v2"), 32, 3, weights="none", hub=None, alpha=0.35, dropout=0,
                         weight_decay=0)
    models.set_backbone_trainable(built.backbone, 10)
    flags = [(layer.trainable, isinstance(layer, keras.layers.BatchNormalization)) for layer in built.backbone.layers]
    assert not any(t for t, _ in flags[:-10])
    assert any(t for t, _ in flags[-10:]) and not any(t for t, bn in flags if bn)
