"""onnx-int8-mixed: ONNX Runtime's static int8 with the layers that cost the most agreement left in float
(quantize_static's nodes_to_exclude), found by the same search as tflite-int8-mixed (mixed.py).

ONNX Runtime has no per-layer diagnosis like TFLite's QuantizationDebugger, so every Conv/Gemm/MatMul with a weight
is a candidate and the search measures what each gives back alone in float, with the nodes that read its output
(mixed.by_benefit, up to MAX_TRIED of them, in graph order). Calibration runs once: quantize_static writes its
ranges to a calibration cache and every later candidate reads them back (ORT 1.32's calibration_cache_path), so a
step costs a quantization, a run on the search images and its timing, not a calibration. The head (the last weighted layer and the ops after it up to the output) is
always float, as in the TFLite format: near ties of quantized probabilities become exact ones. A layer kept in float
gets its own bias back (bias correction's shift is made for int8 weights).
"""
from __future__ import annotations

import math
from typing import Any, Callable, Dict, List

import numpy as np

from edgekit.convert import mixed
from edgekit.convert.context import ExportContext, ExportError
from edgekit.convert.export_int8 import Judge
from edgekit.convert.formats import Format
from edgekit.convert.layer_error import LayerError

MAX_TRIED = 64   # candidates measured one by one; a model with more is searched over its first MAX_TRIED


def head(model, weighted_layers: list) -> List[str]:
    """Names of the nodes from the graph's first output back to (and including) the nearest weighted layer."""
    weighted = {n.name for n in weighted_layers}
    producer = {o: n for n in model.graph.node for o in n.output}
    names: List[str] = []
    tensor = model.graph.output[0].name
    for _ in range(8):   # Softmax, Add, Reshape … between the logits layer and the output
        node = producer.get(tensor)
        if node is None or not node.name:
            break
        names.append(node.name)
        if node.name in weighted or not node.input:
            break
        tensor = node.input[0]
    return names if names and names[-1] in weighted else []


PASS_THROUGH = {"Relu", "Clip", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Mul", "Add",
                "Identity", "Cast"}   # between a layer and the op reading it, a tensor is quantized again


def readers(model) -> Dict[str, List[str]]:
    """Node name -> the nodes that read its output, through elementwise ops (Relu after a Conv): ONNX Runtime
    quantizes a tensor where a quantized node writes it and where one reads it, so a layer alone in float changes
    nothing for the tensor that was crushed; with the ops that read it, it does (the TFLite format's rule)."""
    consumers: Dict[str, List] = {}
    for n in model.graph.node:
        for name in n.input:
            consumers.setdefault(name, []).append(n)
    out: Dict[str, List[str]] = {}
    for n in model.graph.node:
        found, todo, seen = [], list(n.output), set()
        while todo:
            tensor = todo.pop()
            for c in consumers.get(tensor, []):
                if c.name and c.name not in seen:
                    seen.add(c.name)
                    found.append(c.name)
                    if c.op_type in PASS_THROUGH and len(seen) < 16:
                        todo.extend(c.output)
        out[n.name] = found
    return out


def macs(model, weighted_layers: list) -> Dict[str, int]:
    """Multiply-adds of each weighted layer: weight size times output positions (where shapes are known)."""
    from onnx import numpy_helper
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in list(model.graph.value_info) + list(model.graph.output)}
    inits = {i.name: i for i in model.graph.initializer}
    out = {}
    for n in weighted_layers:
        size = int(np.prod(numpy_helper.to_array(inits[n.input[1]]).shape))
        shape = shapes.get(n.output[0], [])
        positions = int(np.prod(shape[2:])) if n.op_type == "Conv" and len(shape) > 2 and all(shape[2:]) else 1
        out[n.name] = size * positions
    return out


def search(fmt: Format, ctx: ExportContext, model, weighted_layers: list, quantize: Callable[[List[str]], Any],
           to_bytes: Callable[[Any], bytes], details: Dict[str, Any], notes: List[str]):
    """The mixed artifact (an ONNX ModelProto, read back from the bytes the search judged): `model` is the prepared float graph whose node names
    quantize(names to keep in float) takes; `weighted_layers` its nodes with a weight (the candidates)."""
    kept_head = head(model, weighted_layers)
    if not kept_head:
        raise ExportError(f"{fmt.name}: could not find the layer computing the logits before the output; the mixed "
                          "format keeps it in float.")
    cost, read_by = macs(model, weighted_layers), readers(model)
    every = [LayerError(n.name, n.op_type, math.nan, math.nan) for n in weighted_layers
             if n.name and n.name not in kept_head]
    candidates = every[:MAX_TRIED]

    def unit(layer: str) -> List[str]:
        return [layer] + [r for r in read_by.get(layer, []) if r != layer]

    @mixed.recent   # by_benefit asks for each candidate twice: its error, then its time
    def make(layers: List[str]) -> bytes:
        names = list(kept_head)
        for layer in layers:
            names.extend(n for n in unit(layer) if n not in names)
        return to_bytes(quantize(names))

    with Judge(fmt, ctx, lambda fn, *a: fn(*a), write=lambda blob, path: path.write_bytes(blob)) as judge:
        result = judge.search_mixed(candidates, make, lambda name: sum(cost.get(n, 0) for n in unit(name)) or 1,
                                    every=every, already_float=kept_head, first=len(candidates),
                                    what="weighted layers", in_order=every)
    details["mixed"] = {**result.to_dict(), "head_in_float": kept_head,
                        "float_ops": sorted(set(kept_head) | {n for e in result.kept_out for n in unit(e.name)})}
    notes.append(result.describe())
    import onnx
    return onnx.load_model_from_string(result.blob)
