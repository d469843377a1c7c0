"""Multiply-accumulates per image, counted from the artifact's own graph (convolutions and dense layers).

Counting from the file rather than the Keras model means a TF Hub backbone (opaque to Keras) is
counted too, and each artifact reports what it actually computes. Element-wise ops, pooling and
softmax are left out: on these networks they are well under 1% of the MACs.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np


def count_macs(path: Path) -> Optional[int]:
    """MACs for one image, or None when the file can't be read."""
    try:
        return _tflite(path) if path.suffix == ".tflite" else _onnx(path)
    except Exception:  # descriptive figure: an odd graph leaves the column empty rather than failing the run
        return None


def _tflite(path: Path) -> int:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType
    it = Interpreter(model_path=str(path),
                     experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    shapes = {d["index"]: [int(v) for v in d["shape"]] for d in it.get_tensor_details()}
    batch = max(1, int(it.get_input_details()[0]["shape"][0]))
    total = 0
    for op in it._get_ops_details():
        name, ins, outs = op["op_name"], list(op["inputs"]), list(op["outputs"])
        if not outs or len(ins) < 2 or outs[0] < 0 or ins[1] < 0:
            continue
        out, w = shapes[outs[0]], shapes[ins[1]]
        if name == "CONV_2D":            # filter (Cout, kh, kw, Cin)
            total += int(np.prod(out)) * w[1] * w[2] * w[3]
        elif name == "DEPTHWISE_CONV_2D":  # filter (1, kh, kw, C)
            total += int(np.prod(out)) * w[1] * w[2]
        elif name == "FULLY_CONNECTED":    # weights (out, in)
            total += int(np.prod(out)) * w[-1]
    return total // batch


def _onnx(path: Path) -> int:
    import onnx
    from onnx import numpy_helper, shape_inference
    model = onnx.load(str(path), load_external_data=False)
    inp = model.graph.input[0].type.tensor_type.shape.dim
    for d in inp[:1]:  # fix an open batch dimension at 1 so inference yields concrete shapes
        d.ClearField("dim_param")
        d.dim_value = 1
    model = shape_inference.infer_shapes(model)
    shapes = {}
    for v in list(model.graph.value_info) + list(model.graph.output) + list(model.graph.input):
        dims = v.type.tensor_type.shape.dim
        if dims and all(d.HasField("dim_value") for d in dims):
            shapes[v.name] = [d.dim_value for d in dims]
    for t in model.graph.initializer:
        shapes[t.name] = list(numpy_helper.to_array(t).shape) if not t.dims else list(t.dims)
    # In a QDQ graph weights reach Conv through DequantizeLinear: follow it back to the initializer.
    producer = {o: n for n in model.graph.node for o in n.output}

    def weight_shape(name: str):
        while name not in shapes and name in producer and producer[name].op_type in ("DequantizeLinear", "Identity"):
            name = producer[name].input[0]
        return shapes.get(name)

    total = 0
    for n in model.graph.node:
        if n.op_type == "Conv" and len(n.input) > 1:
            out, w = shapes.get(n.output[0]), weight_shape(n.input[1])
            if out and w:  # w (Cout, Cin/group, kh, kw)
                total += int(np.prod(out)) * int(np.prod(w[1:]))
        elif n.op_type in ("MatMul", "Gemm") and len(n.input) > 1:
            out, w = shapes.get(n.output[0]), weight_shape(n.input[1])
            if out and w and len(w) == 2:
                k = w[1] if n.op_type == "Gemm" and any(a.name == "transB" and a.i for a in n.attribute) else w[0]
                total += int(np.prod(out)) * k
    return total
