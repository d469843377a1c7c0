"""What is being converted: a run directory from `edge train`, or a model the user brings.

Both end up as a `Source`: a tf_keras model (float image in, probabilities out), its labels, its
PreprocessSpec, and where calibration and validation images come from. Every way a model file can
be unreadable is turned into one EdgeError line saying what to do, before anything is written.
"""
from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import tf_keras as keras

from edgekit.errors import EdgeError
from edgekit.helpers import file_digest
from edgekit.train.models import custom_objects
from edgekit.train.rundir import read_finished_run, read_labels
from edgekit_runtime import PreprocessSpec
from edgekit_runtime.errors import SpecError
from edgekit_runtime.native import first_line
from edgekit.layout import RunLayout

MODEL_SUFFIXES = (".keras", ".h5", ".hdf5")
KERAS3_HINT = ("if it was saved by Keras 3, its file should say so (keras_version); or load it in Keras 3 and call "
               "model.export('saved_model_dir'), then pass that directory")


@dataclass
class Source:
    kind: str                 # "run" | "model"
    path: Path                # the run directory, or the model file / SavedModel directory
    model: keras.Model
    labels: List[str]
    spec: PreprocessSpec
    model_sha256: str
    data: Optional[str]       # where calibration/validation images come from (None: not given)
    data_options: Dict[str, Any] = field(default_factory=dict)  # load_dataset keyword arguments
    seed: int = 42
    batch_size: int = 32
    default_out: Path = Path("export")
    saved_by: Optional[str] = None  # e.g. "Keras 3.15.1 (exported to a SavedModel in a Keras 3 process)"

    def describe(self) -> dict:
        return {"kind": self.kind, "path": str(self.path), "model_sha256": self.model_sha256,
                "labels": list(self.labels), "preprocess": self.spec.to_dict(), "data": self.data,
                "saved_by": self.saved_by}


def _keras_version_of(path: Path) -> Optional[str]:
    """The Keras version that saved a .keras / .h5 file, if it says (None for unknown or unreadable)."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                return str(json.loads(z.read("metadata.json")).get("keras_version"))
        import h5py
        with h5py.File(path, "r") as f:
            v = f.attrs.get("keras_version")
            return v.decode() if isinstance(v, bytes) else (str(v) if v is not None else None)
    except Exception:  # unreadable files are reported by the loader itself, with its reason
        return None


def load_keras_model(path: Path) -> keras.Model:
    """A tf_keras model from a .keras/.h5 file or a SavedModel directory, or one clear EdgeError."""
    return load_any_model(Path(path))[0]


def load_any_model(path: Path) -> tuple:
    """(tf_keras model, what saved it) from a tf_keras or Keras 3 file or a SavedModel directory."""
    if not path.exists():
        raise EdgeError(f"{path} does not exist (expected a run directory, a .keras/.h5 file or a SavedModel directory).")
    if path.is_dir():
        if (path / "keras_metadata.pb").is_file():
            return _load(path), "tf_keras SavedModel"
        if (path / "saved_model.pb").is_file() or (path / "saved_model.pbtxt").is_file():
            return _wrap_saved_model(path), "TensorFlow SavedModel"
        raise EdgeError(f"{path} is a directory but neither a run directory (no model.keras) nor a SavedModel "
                        "(no saved_model.pb).")
    if path.suffix.lower() not in MODEL_SUFFIXES:
        raise EdgeError(f"{path.name}: unsupported model file type {path.suffix or '(none)'!r}; "
                        "give a .keras or .h5 file, a SavedModel directory or a run directory.")
    _check_container(path)
    version = _keras_version_of(path)
    if version and version.startswith("3"):
        from edgekit.convert.keras3 import to_saved_model
        from edgekit.convert.keras3_rebuild import rebuilt_or_none
        saved, info = to_saved_model(path, file_digest(path))
        wrapped = _wrap_saved_model(saved, path.name)
        rebuilt, how = rebuilt_or_none(saved, wrapped)
        if rebuilt is not None:  # real tf_keras layers: bias correction and QAT apply
            return rebuilt, f"Keras {info['keras']} (rebuilt as tf_keras layers in this process; {how})"
        return wrapped, (f"Keras {info['keras']} (exported to a SavedModel in a Keras 3 process; {info.get('backend')} "
                         f"backend; not rebuilt as tf_keras layers: {how})")
    return _load(path), f"tf_keras {version}" if version else "tf_keras"


HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def _check_container(path: Path) -> None:
    """A .keras file is a zip archive and an .h5 file is HDF5: say plainly when the bytes are neither."""
    with open(path, "rb") as fh:
        head = fh.read(8)
    if zipfile.is_zipfile(path) or head == HDF5_SIGNATURE:
        return
    if not head:
        raise EdgeError(f"{path} is empty.")
    if head.startswith(b"PK"):
        raise EdgeError(f"{path} is truncated: its zip archive has no end (an interrupted copy or download?); "
                        "copy the file again.")
    raise EdgeError(f"{path} is not a Keras model file (neither a .keras zip archive nor HDF5).")


def _load(path: Path) -> keras.Model:
    try:
        model = keras.models.load_model(path, custom_objects=custom_objects(), compile=False)
    except Exception as exc:  # h5py, zipfile, protobuf and Keras all raise their own types
        msg = f"{type(exc).__name__}: {first_line(exc)}"
        if isinstance(exc, (EOFError, zipfile.BadZipFile)) or "truncated" in msg.lower():
            raise EdgeError(f"{path} is truncated ({msg}); copy the file again.") from None
        if isinstance(exc, OSError):
            raise EdgeError(f"cannot read {path} ({msg}).") from None
        raise EdgeError(f"cannot load {path} with tf_keras ({msg}); if it was saved by Keras 3, {KERAS3_HINT}.") from None
    if not isinstance(model, keras.Model):
        raise EdgeError(f"{path} holds a {type(model).__name__}, not a Keras model.")
    return model


def _wrap_saved_model(path: Path, name: Optional[str] = None) -> keras.Model:
    """A plain SavedModel (e.g. Keras 3 `model.export()`) as a one-layer tf_keras model."""
    import tensorflow as tf

    from edgekit.train.models import tensorflow_hub
    hub = tensorflow_hub()
    try:
        loaded = tf.saved_model.load(str(path))
    except Exception as exc:
        raise EdgeError(f"cannot read SavedModel {path} ({type(exc).__name__}: {first_line(exc)}).") from None
    sig = getattr(loaded, "signatures", {}).get("serving_default")
    if sig is None:
        raise EdgeError(f"SavedModel {path} has no 'serving_default' signature; export it with one (Keras 3: model.export()).")
    inputs = sig.structured_input_signature[1]
    outputs = sig.structured_outputs
    if len(inputs) != 1 or len(outputs) != 1:
        raise EdgeError(f"SavedModel {path} has {len(inputs)} input(s) and {len(outputs)} output(s); "
                        "an image classifier has one of each.")
    spec = next(iter(inputs.values()))
    if spec.shape.rank != 4 or spec.shape[1] is None or spec.shape[2] is None:
        raise EdgeError(f"SavedModel {path} takes input of shape {spec.shape}; expected (batch, height, width, 3) "
                        "with a fixed height and width.")
    layer = hub.KerasLayer(str(path), signature="serving_default", output_key=next(iter(outputs)), name="saved_model")
    inp = keras.Input(tuple(spec.shape[1:]), name="image")
    return keras.Model(inp, layer(inp), name=(name or path.name).replace(".", "_"))


def check_fits(model: keras.Model, spec: PreprocessSpec, labels: Sequence[str], what: str, byo: bool = False) -> None:
    """The model takes (N, H, W, 3) at the spec's size and outputs one score per label."""
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise EdgeError(f"{what} has {len(model.inputs)} inputs and {len(model.outputs)} outputs; "
                        "an image classifier has one of each.")
    shape = tuple(model.inputs[0].shape)
    if len(shape) != 4 or shape[3] != 3:
        raise EdgeError(f"{what} takes input of shape {shape}; edgekit feeds RGB image batches (N, H, W, 3).")
    if shape[1:3] != spec.size and None not in shape[1:3]:
        hint = f": pass --input-size {shape[1]} {shape[2]}." if byo else "; preprocess.json does not fit model.keras."
        raise EdgeError(f"{what} takes {shape[1]}x{shape[2]} images but the preprocessing says "
                        f"{spec.height}x{spec.width}{hint}")
    out = tuple(model.outputs[0].shape)
    if len(out) != 2 or out[1] != len(labels):
        raise EdgeError(f"{what} outputs shape {out} but there are {len(labels)} labels; "
                        "the labels file needs one class name per output, in output order.")


def open_run(run_dir: Path, data: Optional[str] = None, with_model: bool = True) -> Source:
    """A finished run as a source; `with_model=False` leaves the model unloaded (None) for callers that only
    need its labels, preprocessing and data."""
    run_dir = Path(run_dir)
    cfg, spec, labels = read_finished_run(run_dir)
    model = load_keras_model(RunLayout(run_dir).model) if with_model else None
    if with_model:
        check_fits(model, spec, labels, "the run's model")
    return Source("run", run_dir, model, labels, spec, file_digest(RunLayout(run_dir).model),
                  data or cfg.data, run_data_options(cfg, same=data is None), cfg.seed, cfg.batch_size,
                  RunLayout(run_dir).export)


def run_data_options(cfg, same: bool = True) -> dict:
    """load_dataset's options that give a run's own splits (`same`), or the whole of other data."""
    return dict(val_fraction=cfg.val_fraction, test_fraction=cfg.test_fraction, seed=cfg.seed,
                limit_per_class=cfg.limit_per_class if same else None,
                test_limit_per_class=cfg.test_limit_per_class if same else None, skip_bad=cfg.skip_bad,
                use_cache=cfg.data_cache, cache_dir=cfg.cache_dir)


def _byo_data_options(seed: int) -> dict:
    """load_dataset's options for a model brought without a run: the data's own test split, or 10 % of it."""
    return dict(val_fraction=0.1, test_fraction=0.1, seed=seed)


def _given_spec(size: Sequence[int], scale: Sequence[float], offset: Sequence[float], channel_order: str,
                name: str, layout: str = "NHWC") -> PreprocessSpec:
    """The preprocessing given on the command line, or one EdgeError line."""
    try:
        return PreprocessSpec(height=int(size[0]), width=int(size[1]), scale=_per_channel(scale, "scale"),
                              offset=_per_channel(offset, "offset"), channel_order=channel_order, layout=layout,
                              notes=f"given on the command line for {name}")
    except SpecError as exc:
        raise EdgeError(str(exc)) from None


def open_model(path: Path, *, input_size: Optional[Sequence[int]], scale: Sequence[float],
               offset: Sequence[float], labels_file: Optional[Path], data: Optional[str],
               channel_order: str = "RGB", seed: int = 42) -> Source:
    """Bring-your-own model: the preprocessing and labels come from the command line."""
    path = Path(path)
    if labels_file is None:
        raise EdgeError(f"{path.name} is not an `edge train` run: pass --labels FILE (one class name per line, "
                        "in output order) and --input-size H W, --scale, --offset.")
    labels = read_labels(Path(labels_file))
    model, saved_by = load_any_model(path)
    shape = tuple(model.inputs[0].shape) if len(model.inputs) == 1 else ()
    if input_size is None:
        if len(shape) == 4 and None not in shape[1:3]:
            input_size = shape[1:3]  # the model says it; --input-size only needs to agree
        else:
            raise EdgeError(f"{path.name} accepts any image size: pass --input-size H W.")
    spec = _given_spec(input_size, scale, offset, channel_order, path.name)
    check_fits(model, spec, labels, path.name, byo=True)
    digest = file_digest(path)
    out = path.parent / f"{path.stem if path.is_file() else path.name}-export"
    return Source("model", path, model, labels, spec, digest, data, _byo_data_options(seed), seed, 32, out, saved_by)


def open_onnx(path: Path, *, input_size: Optional[Sequence[int]], scale: Sequence[float],
              offset: Sequence[float], labels_file: Optional[Path], data: Optional[str],
              channel_order: str = "RGB", seed: int = 42) -> Source:
    """An ONNX model (e.g. exported from PyTorch): ONNX Runtime runs it as the reference; its layout is its own."""
    from edgekit.convert.onnx_source import OnnxReference, check_outputs, size_of
    path = Path(path)
    if labels_file is None:
        raise EdgeError(f"{path.name}: pass --labels FILE (one class name per line, in output order), the "
                        "preprocessing (--mean/--std or --scale/--offset) and --data.")
    labels = read_labels(Path(labels_file))
    ref = OnnxReference(path)
    size = size_of(ref, input_size)
    spec = _given_spec(size, scale, offset, channel_order, path.name, layout=ref.layout)
    check_outputs(ref, size, labels)
    return Source("onnx", path, ref, labels, spec, file_digest(path), data, _byo_data_options(seed), seed, 32,
                  path.parent / f"{path.stem}-export", ref.describe())


def open_export(export: Path, manifest: dict, data: Optional[str] = None, with_model: bool = True) -> Source:
    """The source an export directory was converted from, as its manifest records it (for `edge bench EXPORT`)."""
    src = manifest.get("source") or {}
    if src.get("kind") == "run":
        return open_run(Path(src["path"]), data, with_model)
    path = Path(str(src.get("path", "")))
    if with_model and (not src.get("path") or not path.exists()):
        raise EdgeError(f"{export} was converted from {path}, which is gone; bench needs the source model as its "
                        "reference (convert it again, or put it back).")
    if with_model and src.get("model_sha256") and file_digest(path) != src["model_sha256"]:
        raise EdgeError(f"{path} changed since {export} was converted from it: convert it again first.")
    try:
        spec = PreprocessSpec.from_dict(src["preprocess"])
        labels = [str(x) for x in src["labels"]]
    except (KeyError, TypeError, SpecError) as exc:
        raise EdgeError(f"{export}/manifest.json does not record the source's preprocessing and labels ({exc}); "
                        "convert it again.") from None
    if not (data or src.get("data")):
        raise EdgeError(f"{export} was converted without --data: pass --data PATH (images to benchmark on).")
    if not with_model:
        model, saved_by = None, src.get("saved_by")
    elif src.get("kind") == "onnx":
        from edgekit.convert.onnx_source import OnnxReference
        model = OnnxReference(path)
        saved_by = model.describe()
    else:
        model, saved_by = load_any_model(path)
        check_fits(model, spec, labels, path.name, byo=True)
    return Source(src.get("kind", "model"), path, model, labels, spec, src["model_sha256"], data or src.get("data"),
                  _byo_data_options(42), 42, 32, export, saved_by)


def open_source(path: Path, export: Path, manifest: dict, data: Optional[str] = None, with_model: bool = True) -> Source:
    """The reference for `path`: a run directory's model, or the model an export directory was converted from."""
    if Path(export) != Path(path):
        return open_run(path, data, with_model)
    return open_export(export, manifest, data, with_model)


def _per_channel(values: Sequence[float], what: str) -> tuple:
    vals = tuple(float(v) for v in values)
    if len(vals) == 1:
        return vals * 3
    if len(vals) != 3:
        raise EdgeError(f"--{what} takes one value or three (one per channel), got {len(vals)}.")
    return vals
