"""A Keras 3 functional model rebuilt as tf_keras layers from its graph (config) and weights, written by the Keras 3
child process (keras3.py): with real layers, bias correction and QAT apply as to any tf_keras model. Only plain
built-in layers are rebuilt (models nested inside the model are flattened into their layers first, in the child);
anything else (custom or unknown layers, a mismatch) returns None with the reason, and the SavedModel wrapper is
used instead. The caller checks the rebuilt model against the SavedModel."""
from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

GRAPH_FILE, WEIGHTS_FILE = "edgekit-graph.json", "edgekit-weights.npz"
_BASE_KEYS = {"name", "trainable", "dtype"}
_NOT_WEIGHTS = ("initializer", "regularizer", "constraint")  # weights are set afterwards; these never matter here


class NotRebuildable(Exception):
    """Why the graph cannot be rebuilt as tf_keras layers (the SavedModel wrapper is used instead)."""


def _clean(cls, config: Dict[str, Any]) -> Dict[str, Any]:
    """The config keys tf_keras' class takes, with Keras 3's dtype policies as plain dtype names."""
    accepted = set(inspect.signature(cls.__init__).parameters) | _BASE_KEYS
    out = {}
    for key, value in config.items():
        if key not in accepted or any(word in key for word in _NOT_WEIGHTS):
            continue
        if key == "dtype" and isinstance(value, dict):
            value = (value.get("config") or {}).get("name", "float32")
        if isinstance(value, dict):  # an activation or other object given as a config: not a plain built-in
            raise NotRebuildable(f"layer {config.get('name')!r}: {key} is a {value.get('class_name', 'object')}")
        out[key] = value
    return out


def _tensors(arg) -> List[Tuple[str, int, int]]:
    """The (layer, node, tensor) histories of one call argument (a tensor or a list of them)."""
    if isinstance(arg, dict) and arg.get("class_name") == "__keras_tensor__":
        return [tuple(arg["config"]["keras_history"])]
    if isinstance(arg, list):
        return [t for a in arg for t in _tensors(a)]
    raise NotRebuildable(f"a call argument of type {type(arg).__name__} is not a tensor")


def rebuild(folder: Path):
    """(the tf_keras model from folder/GRAPH_FILE and WEIGHTS_FILE, the nested models the child flattened into it);
    raises NotRebuildable."""
    import tf_keras as keras
    graph_path = Path(folder) / GRAPH_FILE
    if not graph_path.is_file():
        raise NotRebuildable("the Keras 3 model is not a functional graph")
    config = json.loads(graph_path.read_text())
    weights = np.load(Path(folder) / WEIGHTS_FILE)
    outputs: Dict[Tuple[str, int], List[Any]] = {}   # (layer, node) -> output tensors
    layers = {}
    for spec in config["layers"]:
        name, cls_name = spec["name"], spec["class_name"]
        if cls_name == "InputLayer":
            shape = spec["config"].get("batch_shape") or spec["config"].get("batch_input_shape")
            outputs[name, 0] = [keras.Input(batch_shape=tuple(shape), name=name)]
            continue
        cls = getattr(keras.layers, cls_name, None)
        if cls is None or spec.get("module", "keras.layers") not in ("keras.layers", None):
            raise NotRebuildable(f"layer {name!r} is a {cls_name}, not a built-in tf_keras layer")
        layer = layers[name] = cls(**_clean(cls, spec["config"]))
        for k, node in enumerate(spec.get("inbound_nodes", [])):
            if node.get("kwargs"):
                extra = {k2: v for k2, v in node["kwargs"].items() if k2 != "training" and v is not None}
                if extra:
                    raise NotRebuildable(f"layer {name!r} is called with {', '.join(extra)}")
            args = [outputs[h[0], h[1]][h[2]] for arg in node["args"] for h in _tensors(arg)]
            single = len(node["args"]) == 1 and not isinstance(node["args"][0], list)
            out = layer(args[0] if single else args)
            outputs[name, k] = list(out) if isinstance(out, (list, tuple)) else [out]
        own = [weights[f"{name}/{i}"] for i in range(sum(1 for key in weights.files if key.startswith(f"{name}/")))]
        if len(own) != len(layer.get_weights()):
            raise NotRebuildable(f"layer {name!r} has {len(own)} weights in Keras 3, {len(layer.get_weights())} "
                                 "in tf_keras")
        layer.set_weights(own)
    def pick(refs):  # one [layer, node, tensor] or a list of them
        refs = [refs] if refs and isinstance(refs[0], str) else refs
        return [outputs[r[0], r[1]][r[2]] for r in refs]
    ins, outs = pick(config["input_layers"]), pick(config["output_layers"])
    return (keras.Model(ins[0] if len(ins) == 1 else ins, outs[0] if len(outs) == 1 else outs,
                        name=config.get("name", "model")), config.get("edgekit_flattened") or [])


# Runs in the Keras 3 child after the export: the graph and every layer's weights, for rebuild(). A model with
# models inside it (how transfer-learned models are saved: Sequential([base_model, pooling, dense]), or a
# Functional calling a backbone) is first flattened: every leaf layer called again, in order, on new Keras
# tensors, so that one Functional graph of the same layer objects (the same weights) remains. Flattening that
# fails for any reason (two layers of one name, an unusual call) leaves the model as it was, wrapped.
CHILD_DUMP = r"""
def _flat(model):
    import keras

    def call(op, *args, **kwargs):
        if isinstance(op, keras.Sequential):
            x = args[0]
            for layer in op.layers:
                x = call(layer, x)
            return x
        if isinstance(op, keras.Model) and hasattr(op, "_run_through_graph"):
            inputs = args[0] if len(args) == 1 else list(args)
            return op._run_through_graph(inputs, operation_fn=lambda o: (lambda *a, **k: call(o, *a, **k)))
        if isinstance(op, keras.Model):
            raise ValueError(f"{op.name} is a subclassed model")
        kwargs.pop("training", None)
        return op(*args, **kwargs)

    inner = [layer.name for layer in model.layers if isinstance(layer, keras.Model)]
    if not inner and type(model).__name__ == "Functional":
        return model, []
    inputs = [keras.Input(batch_shape=tuple(t.shape), dtype=t.dtype, name=f"{model.name}_input{i}")
              for i, t in enumerate(model.inputs)]
    outputs = call(model, *inputs)
    flat = keras.Model(inputs[0] if len(inputs) == 1 else inputs, outputs, name=model.name)
    if any(isinstance(layer, keras.Model) for layer in flat.layers):
        raise ValueError("a model is left inside")
    return flat, inner


def dump_graph(model, dst):
    import json, numpy as np
    from pathlib import Path
    try:
        model, flattened = _flat(model)
    except Exception:
        flattened = []
    if type(model).__name__ not in ("Functional", "Model") or not hasattr(model, "get_config"):
        return
    try:
        config = model.get_config()
    except Exception:
        return
    if "layers" not in config or "input_layers" not in config:
        return
    config["edgekit_flattened"] = flattened
    arrays = {f"{layer.name}/{i}": w for layer in model.layers for i, w in enumerate(layer.get_weights())}
    Path(dst, "edgekit-graph.json").write_text(json.dumps(config))
    np.savez(Path(dst, "edgekit-weights.npz"), **arrays)
"""


def check_same(rebuilt, wrapped, height: int, width: int) -> float:
    """Max |Δ| between the rebuilt model and the SavedModel wrapper on a seeded random batch."""
    x = np.random.default_rng(0).normal(0, 1, size=(4, height, width, 3)).astype(np.float32)
    return float(np.abs(np.asarray(rebuilt(x, training=False)) - np.asarray(wrapped(x, training=False))).max())


def rebuilt_or_none(folder: Path, wrapped) -> Tuple[Optional[Any], str]:
    """(tf_keras model, how it was checked) or (None, why not)."""
    try:
        model, flattened = rebuild(folder)
    except NotRebuildable as exc:
        return None, str(exc)
    except Exception as exc:  # tf_keras refusing a config: fall back, saying so
        return None, f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
    shape = tuple(model.inputs[0].shape)
    if len(model.inputs) != 1 or len(shape) != 4 or None in shape[1:3]:
        return None, "not one fixed-size image input"
    diff = check_same(model, wrapped, int(shape[1]), int(shape[2]))
    if not diff <= 1e-4:
        return None, f"the rebuilt layers differ from the SavedModel by {diff:.2g}"
    inner = f"the nested model(s) {', '.join(repr(n) for n in flattened)} flattened into its layers; " if flattened else ""
    return model, f"{inner}max |Δ| {diff:.1e} against its SavedModel"
