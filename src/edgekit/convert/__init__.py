"""Conversion stage: TFLite / ONNX export of a trained model, each artifact validated through the runtime.

    from edgekit.convert import ConvertConfig, convert
    report = convert(ConvertConfig("runs/demo", formats="tflite-int8,onnx-fp32"))
    report.exit_code   # 0 when every artifact exported and validated

The formats table (edgekit.convert.formats.FORMATS) is importable without TensorFlow; the rest is
loaded on first use.
"""
from edgekit.convert.formats import DEFAULT_FORMATS, FORMATS, Format, Tolerance, resolve_formats

__all__ = ["FORMATS", "DEFAULT_FORMATS", "Format", "Tolerance", "resolve_formats", "ConvertConfig", "ConvertReport",
           "convert"]


def __getattr__(name):
    if name in ("ConvertConfig", "ConvertReport", "convert"):
        from edgekit.convert import run
        return getattr(run, name)
    raise AttributeError(name)
