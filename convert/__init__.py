"""Conversion stage (TFLite / ONNX export and parity validation): arrives with its own issue."""
