"""Model presets as data: one row per backbone, with its builder, default size and normalisation."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

from edgekit.errors import EdgeError
from edgekit.helpers import did_you_mean as suggest

# model_input = pixel * scale + offset, per channel (see edgekit_runtime.PreprocessSpec).
MINUS_ONE_TO_ONE = ((1 / 127.5,) * 3, (-1.0,) * 3)
ZERO_TO_ONE = ((1 / 255,) * 3, (0.0,) * 3)
# Caffe-style ResNet50: BGR order, ImageNet mean subtracted, no scaling.
CAFFE_BGR = ((1.0,) * 3, (-103.939, -116.779, -123.68))


@dataclass(frozen=True)
class Preset:
    name: str
    builder: str                     # attribute of tf_keras.applications, or "resnet8"
    default_size: int
    default_weights: str             # "imagenet" or "none"
    normalization: Tuple[Tuple[float, ...], Tuple[float, ...]]
    channel_order: str = "RGB"
    from_scratch: bool = False       # trained whole from the first epoch (no frozen backbone)
    extra: Optional[dict] = None     # extra builder kwargs
    summary: str = ""


PRESETS = {p.name: p for p in [
    Preset("mobilenet_v2", "MobileNetV2", 160, "imagenet", MINUS_ONE_TO_ONE,
           summary="MobileNetV2 (keras.applications), inputs in [-1, 1]"),
    Preset("mobilenet_v3_small", "MobileNetV3Small", 224, "imagenet", MINUS_ONE_TO_ONE,
           extra={"include_preprocessing": False}, summary="MobileNetV3-Small, inputs in [-1, 1]"),
    Preset("mobilenet_v3_large", "MobileNetV3Large", 224, "imagenet", MINUS_ONE_TO_ONE,
           extra={"include_preprocessing": False}, summary="MobileNetV3-Large, inputs in [-1, 1]"),
    Preset("resnet50", "ResNet50", 224, "imagenet", CAFFE_BGR, channel_order="BGR",
           summary="ResNet50, caffe preprocessing (BGR, ImageNet mean subtracted)"),
    Preset("resnet8", "resnet8", 32, "none", ZERO_TO_ONE, from_scratch=True,
           summary="MLPerf Tiny image-classification ResNet-8 (~78k parameters), trained from scratch"),
]}

# TF Hub image modules take [0, 1] floats and do their own scaling inside.
HUB_NORMALIZATION = ZERO_TO_ONE
HUB_DEFAULT_SIZE = 224


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise EdgeError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}.{suggest(name, PRESETS)}") from None


def resolve_size(preset: Preset, input_size: Optional[int], hub: Optional[str]) -> int:
    if input_size:
        return input_size
    return HUB_DEFAULT_SIZE if hub else preset.default_size


