"""The child process that turns an ONNX model into a channels-last SavedModel with onnx2tf (onnx_to_tf.py runs it).

Run by path, not as part of edgekit: onnx2tf drives TensorFlow's Keras its own way and must not inherit the
parent's tf_keras set-up. It prints `progress STAGE DONE TOTAL` lines for the parent to show, and the reason on
stderr when it fails. Usage: python onnx2tf_child.py MODEL.onnx OUT_DIR
"""
import importlib
import os
import shutil
import sys
import time
from pathlib import Path

# The sample images onnx2tf checks a fixed-batch image model with; it downloads them from GitHub when the working
# directory lacks them, and fails offline. Any images do: they only drive its own output comparisons.
SAMPLE_FILE = "calibration_image_sample_data_20x128x128x3_float32.npy"


def say(stage: str, done: int = 0, total: int = 0) -> None:
    print(f"progress {stage} {done} {total}", flush=True)


def prepare(src: Path, dst: Path) -> int:
    """Fold constant subgraphs into initializers, pad max-pools by their edge values, infer shapes; returns the
    node count.

    PyTorch writes F.pad / nn.ZeroPad2d amounts as a small computed subgraph (ConstantOfShape, Concat, Slice,
    Transpose, Cast) feeding Pad. onnx2tf expects onnx-simplifier to have folded it; without onnxsim (it is
    not installed with onnx2tf) the pads stay a runtime tensor, onnx2tf cannot carry them over to channels-last,
    pads the wrong axes and then fails (or leaves convs channels-first that TFLite cannot lower). Folding here
    does the part of onnxsim that matters, with what onnx2tf already depends on (onnx-graphsurgeon, onnxruntime).
    """
    import onnx
    import onnx_graphsurgeon as gs
    model = onnx.load(str(src))
    graph = gs.import_onnx(model)
    graph.fold_constants().cleanup()
    edge_padded_max_pools(graph)
    graph.cleanup().toposort()
    folded = gs.export_onnx(graph, do_type_check=False)
    folded.ir_version = model.ir_version  # export_onnx picks its own; ONNX Runtime may not read a newer one
    del folded.metadata_props[:]
    folded.metadata_props.extend(model.metadata_props)
    folded = onnx.shape_inference.infer_shapes(folded)
    onnx.save(folded, str(dst))
    return len(folded.graph.node)


def edge_padded_max_pools(graph) -> int:
    """MaxPool's own padding (ResNet's stem: 3x3, stride 2, pad 1) as an explicit Pad of mode 'edge'.

    TensorFlow pools pad TF-style, so onnx2tf pads PyTorch's symmetric padding itself, with the float minimum as
    the value (PadV2). TFLite quantizes that badly: int8 XNNPACK fails to prepare the model and int16x8 keeps
    the pad value float32, which the PAD kernel refuses. Edge values give the same maximum (every window overlaps
    the image and reaches the edge row or column a padded cell repeats, as long as pad <= kernel // 2, which
    PyTorch requires), and onnx2tf writes an edge pad as MIRROR_PAD (SYMMETRIC), which has no pad value."""
    import numpy as np
    import onnx_graphsurgeon as gs
    changed = 0
    for node in list(graph.nodes):
        if node.op != "MaxPool" or len(node.outputs) != 1:
            continue
        k = list(node.attrs.get("kernel_shape", []))
        pads = list(node.attrs.get("pads", [0] * 2 * len(k)))
        plain = (node.attrs.get("auto_pad", "NOTSET") in ("NOTSET", b"NOTSET") and not node.attrs.get("ceil_mode", 0)
                 and all(d == 1 for d in node.attrs.get("dilations", [1] * len(k))))
        if not plain or not any(pads) or len(pads) != 2 * len(k) or \
                any(p > kk // 2 for p, kk in zip(pads, k + k)):
            continue
        n = len(k)
        amounts = gs.Constant(f"{node.name}_edge_pads", np.array([0, 0] + pads[:n] + [0, 0] + pads[n:], np.int64))
        padded = gs.Variable(f"{node.name}_edge_padded", dtype=node.inputs[0].dtype)
        graph.nodes.append(gs.Node("Pad", f"{node.name}_edge_pad", {"mode": "edge"}, [node.inputs[0], amounts],
                                   [padded]))
        node.inputs[0] = padded
        node.attrs["pads"] = [0] * 2 * n
        changed += 1
    return changed


def write_sample_images(workdir: Path) -> None:
    import numpy as np
    rng = np.random.default_rng(0)
    # smooth, image-like values in [0, 1]: noise upsampled 8x
    low = rng.random((20, 16, 16, 3), dtype=np.float32)
    np.save(workdir / SAMPLE_FILE, low.repeat(8, axis=1).repeat(8, axis=2))


def count_ops(total: int) -> None:
    """Report each ONNX node onnx2tf converts: it imports the module of each node's op type just before."""
    real = importlib.import_module
    state = {"done": 0, "said": 0.0}

    def counting(name, package=None):
        if name.startswith("onnx2tf.ops.") and name != "onnx2tf.ops.Input":
            state["done"] += 1
            now = time.monotonic()
            if now - state["said"] >= 1.0 or state["done"] == total:
                state["said"] = now
                say("convert", min(state["done"], total), total)
        return real(name, package)

    importlib.import_module = counting


def main(src: Path, out: Path) -> None:
    workdir = out.parent
    say("fold")
    work = workdir / "folded.onnx"
    try:
        total = prepare(src, work)
    except Exception as exc:  # a graph onnx-graphsurgeon cannot fold: onnx2tf may still take it as it is
        print(f"note: constants not folded ({type(exc).__name__}: {exc})", file=sys.stderr)
        shutil.copyfile(src, work)
        total = 0
    write_sample_images(workdir)
    os.chdir(workdir)  # onnx2tf reads the sample images from, and writes scratch files into, the working directory
    say("convert", 0, total)
    count_ops(total)
    import onnx2tf
    import tensorflow as tf
    import tf_keras
    # disable_model_save: the model comes back in memory and onnx2tf writes nothing itself. Its own float32 and
    # float16 .tflite files (converted with SELECT_TF_OPS allowed) were most of its time (EfficientNet-B0: 66 s in
    # all, 9 s without), and edgekit makes every TFLite format itself, with the options of the formats table.
    # onnx-simplifier runs where it is installed (onnx2tf's own first step); where it is not, onnx2tf would try
    # to start it three times before going on without.
    model = onnx2tf.convert(input_onnx_file_path=str(work), output_folder_path=str(out), non_verbose=True,
                            not_use_onnxsim=shutil.which("onnxsim") is None, disable_model_save=True)
    say("save")
    # as onnx2tf's command line saves it (its --output_signaturedefs): one serving_default endpoint
    archive = tf_keras.export.ExportArchive()
    archive.add_endpoint(name="serving_default", fn=lambda *inputs: model(inputs),
                         input_signature=[tf.TensorSpec(t.shape, t.dtype, t.name) for t in model.inputs])
    archive.write_out(str(out))
    say("done")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
