"""edgekit_runtime: image preprocessing and inference for edgekit artifacts, with no TensorFlow.

Nothing in this package may import TensorFlow or any other edgekit package: it is what ships to the
device. The training stage imports it (not the other way round) so that both sides decode and
normalise images with the very same code. Inference engines (LiteRT, tflite_runtime, ONNX Runtime)
are imported only when a model is loaded.
"""
from .classifier import Classifier
from .errors import EngineUnavailable, ImageError, InputError, ModelError, RuntimeErrorBase, SpecError
from .image import load_rgb, resize_rgb
from .preprocess import PreprocessSpec

__all__ = ["Classifier", "EngineUnavailable", "ImageError", "InputError", "ModelError", "RuntimeErrorBase",
           "SpecError", "PreprocessSpec", "load_rgb", "resize_rgb"]
__version__ = "0.1.0"
