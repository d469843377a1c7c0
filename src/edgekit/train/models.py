"""Building models: a backbone (keras.applications, TF Hub or ResNet-8) plus the classification head."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import tf_keras as keras

from edgekit.errors import EdgeError
from edgekit.helpers import file_digest  # noqa: F401  (train's callers name it models.file_digest)
from edgekit.train.presets import Preset

HEAD_NAMES = ("head_dropout", "predictions")


@dataclass
class Built:
    model: keras.Model              # image → probabilities
    backbone: Optional[keras.layers.Layer]  # None for from-scratch models
    features: Optional[keras.Model]  # image → pooled features (the cacheable part)
    head: Optional[keras.Model]      # pooled features → probabilities, sharing weights with `model`


def resnet8(input_shape, num_classes: int, dropout: float, weight_decay: float) -> keras.Model:
    """The MLPerf Tiny image-classification reference ResNet (three stacks of 16/32/64 filters)."""
    reg = keras.regularizers.l2(weight_decay) if weight_decay else None
    conv = lambda f, k, s: keras.layers.Conv2D(f, k, strides=s, padding="same", kernel_initializer="he_normal",  # noqa: E731
                                               kernel_regularizer=reg)
    inputs = keras.Input(input_shape, name="image")
    x = keras.layers.ReLU()(keras.layers.BatchNormalization()(conv(16, 3, 1)(inputs)))
    for filters, stride in ((16, 1), (32, 2), (64, 2)):
        y = keras.layers.ReLU()(keras.layers.BatchNormalization()(conv(filters, 3, stride)(x)))
        y = keras.layers.BatchNormalization()(conv(filters, 3, 1)(y))
        shortcut = x if stride == 1 else conv(filters, 1, stride)(x)
        x = keras.layers.ReLU()(keras.layers.Add()([shortcut, y]))
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = keras.layers.Dropout(dropout, name=HEAD_NAMES[0])(x)
    # float32 probabilities under a bfloat16 policy too: the loss takes their logarithm
    outputs = keras.layers.Dense(num_classes, activation="softmax", name=HEAD_NAMES[1], kernel_regularizer=reg,
                                 dtype="float32")(x)
    return keras.Model(inputs, outputs, name="resnet8")


def _application_backbone(preset: Preset, size: int, weights: str, alpha: float) -> keras.Model:
    kwargs = dict(include_top=False, input_shape=(size, size, 3), **(preset.extra or {}))
    if preset.builder.startswith("MobileNet"):
        kwargs["alpha"] = alpha
    ctor = getattr(keras.applications, preset.builder)
    if weights not in ("imagenet", "none") and not Path(weights).is_file():
        raise EdgeError(f"weights file {weights} does not exist (use imagenet, none or a path to a weights file).")
    try:
        return ctor(weights=None if weights == "none" else weights, **kwargs)
    except (ValueError, OSError, KeyError) as exc:
        if weights == "imagenet":
            raise EdgeError(f"could not get ImageNet weights for {preset.name} at {size}px ({str(exc).splitlines()[0][:120]}); "
                            "offline, pass --weights PATH to a local weights file.") from None
        raise EdgeError(f"weights file {weights} does not fit {preset.name} (alpha {alpha}, {size}px): "
                        f"{str(exc).splitlines()[0][:160]}.") from None
    except Exception as exc:  # urllib/http errors while downloading
        raise EdgeError(f"could not download ImageNet weights for {preset.name} ({type(exc).__name__}); "
                        "offline, pass --weights PATH to a local weights file.") from None


def tensorflow_hub():
    """tensorflow_hub, imported without its pkg_resources deprecation warning (it still uses that API)."""
    import warnings
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
        import tensorflow_hub as hub
    return hub


def hub_layer(handle: str, trainable: bool):
    hub = tensorflow_hub()
    local = Path(handle).expanduser()
    is_url = handle.startswith(("http://", "https://", "gs://"))
    if not is_url and not local.exists():
        raise EdgeError(f"TF Hub module {handle} is neither a URL nor an existing directory.")
    try:
        return hub.KerasLayer(str(local) if not is_url else handle, trainable=trainable, name="hub_backbone")
    except Exception as exc:
        if is_url:
            raise EdgeError(f"TF Hub handle {handle} can't be reached (offline?); download the module where there is "
                            "internet and pass its local directory instead, e.g. --hub ./mobilenet_v2_feature_vector.") from None
        raise EdgeError(f"{handle} is not a loadable TF Hub SavedModel ({type(exc).__name__}: {str(exc).splitlines()[0][:120]}).") from None


def build(preset: Preset, size: int, num_classes: int, *, weights: str, hub: Optional[str], alpha: float,
          dropout: float, weight_decay: float) -> Built:
    if preset.from_scratch and not hub:
        if weights == "imagenet":
            raise EdgeError(f"{preset.name} is trained from scratch and has no ImageNet weights; use --weights none or a PATH.")
        model = resnet8((size, size, 3), num_classes, dropout, weight_decay)
        if weights != "none":
            load_weights_checked(model, weights, preset.name)
        return Built(model, None, None, None)
    inputs = keras.Input((size, size, 3), name="image")
    if hub:
        backbone = hub_layer(hub, trainable=False)
        pooled = backbone(inputs, training=False)
    else:
        backbone = _application_backbone(preset, size, weights, alpha)
        # training=False keeps BatchNorm in inference mode even when layers are unfrozen for fine-tuning.
        pooled = keras.layers.GlobalAveragePooling2D(name="pool")(backbone(inputs, training=False))
    features = keras.Model(inputs, pooled, name="features")
    feat_in = keras.Input(pooled.shape[1:], name="features")
    dropout_layer = keras.layers.Dropout(dropout, name=HEAD_NAMES[0])
    dense = keras.layers.Dense(num_classes, activation="softmax", name=HEAD_NAMES[1])
    head = keras.Model(feat_in, dense(dropout_layer(feat_in)), name="head")
    model = keras.Model(inputs, dense(dropout_layer(pooled)), name=f"{hub and 'hub' or preset.name}_classifier")
    return Built(model, backbone, features, head)


def load_weights_checked(model: keras.Model, path: str, what: str) -> None:
    if not Path(path).is_file():
        raise EdgeError(f"weights file {path} does not exist.")
    try:
        model.load_weights(path)
    except (ValueError, OSError, KeyError) as exc:
        raise EdgeError(f"weights file {path} does not fit {what}: {str(exc).splitlines()[0][:160]}.") from None


def set_backbone_trainable(backbone, top_layers: int) -> None:
    """Unfreeze the top `top_layers` layers (0 = all); BatchNorm layers stay frozen."""
    backbone.trainable = True
    layers = getattr(backbone, "layers", None)
    if layers is None:  # a TF Hub layer is all-or-nothing
        return
    cut = 0 if top_layers <= 0 else max(0, len(layers) - top_layers)
    for i, layer in enumerate(layers):
        layer.trainable = i >= cut and not isinstance(layer, keras.layers.BatchNormalization)


@keras.utils.register_keras_serializable(package="edgekit")
class FlipWidth(keras.layers.Layer):
    """Mirrors a batch of NHWC images left to right (TFLite: REVERSE_V2; ONNX: a reversed slice)."""

    def call(self, x):
        import tensorflow as tf
        return tf.reverse(x, axis=[2])


TTA = ("none", "flip")


def with_tta(model: keras.Model, tta: str) -> keras.Model:
    """`flip`: one model answering with the mean of `model`'s probabilities on the image and on its mirror image:
    about +1 point for a small net at twice the inference cost, inside the artifact so every engine agrees."""
    if tta == "none":
        return model
    name = getattr(model, "input_names", ["image"])[0]
    model = keras.Model(model.inputs, model.outputs, name=model.name)  # the same layers, without the optimizer
    inp = keras.Input(model.input_shape[1:], name=name)
    out = keras.layers.Average(name="flip_tta")([model(inp), model(FlipWidth(name="mirror")(inp))])
    return keras.Model(inp, out, name=f"{model.name}_flip_tta")


def custom_objects() -> dict:
    hub = tensorflow_hub()
    return {"KerasLayer": hub.KerasLayer, "FlipWidth": FlipWidth, "edgekit>FlipWidth": FlipWidth}


def load_model(path: Path) -> keras.Model:
    try:
        return keras.models.load_model(path, custom_objects=custom_objects(), compile=False)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise EdgeError(f"cannot load model {path} ({type(exc).__name__}: {str(exc).splitlines()[0][:160]}).") from None
