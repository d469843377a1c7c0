"""manifest.json (what each artifact is, how it was made, how it validated) and the console summary.

Inspection reads the artifact files themselves (tensor shapes, dtypes, quantization parameters, op
lists), so the manifest describes what was written rather than what was asked for.
"""
from __future__ import annotations

import json
import platform
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Dict, List, Optional, TypedDict

import numpy as np
from rich.markup import escape
from rich.table import Table

from edgekit.convert.context import Exported
from edgekit.errors import EdgeError
from edgekit.helpers import file_digest, fmt_size
from edgekit_runtime.artifacts import MANIFEST_FILE
from edgekit_runtime.native import first_line
from edgekit.status import LEGEND, SYMBOLS, Status
from edgekit.versions import package_versions
from edgekit.convert.formats import Format
from edgekit.convert.validate import FormatValidation
from edgekit.layout import RunLayout
from edgekit_runtime.tflite_meta import read_metadata
from edgekit.convert.formats import FORMATS

SCHEMA_VERSION = 1
PASSED, OUTSIDE, FAILED = Status.PASSED.value, Status.OUTSIDE.value, Status.FAILED.value
COMMON_TOOLS = ("edgekit", "edgekit-runtime", "numpy")
ENGINE_TOOLS = {"litert": ("tensorflow", "tf_keras", "ai-edge-litert"),
                "onnx": ("tensorflow", "tf2onnx", "onnx", "onnxruntime")}


class Tensor(TypedDict):
    name: str
    shape: List[Optional[int]]      # None: a dynamic dimension
    dtype: str
    quantization: Optional[dict]    # {scale: [...], zero_point: [...]} for quantized TFLite tensors


class ArtifactEntry(TypedDict, total=False):
    """One format in manifest.json (schema version 1): what was asked, what was written, how it validated."""
    format: str                     # the formats table's name (tflite-int8 …)
    file: Optional[str]             # None when the export failed
    status: str                     # edgekit.status.Status value
    symbol: str
    engine: str
    summary: str
    options: dict
    tolerance: dict
    convert_seconds: float
    tools: Dict[str, str]           # package versions that made it
    error: str                      # export failed: why (and nothing below)
    size_bytes: int
    sha256: str
    inputs: List[Tensor]            # read back from the file
    outputs: List[Tensor]
    ops: Dict[str, int]
    opset: Dict[str, int]           # ONNX only
    embedded_metadata: List[str]
    inspect_error: str
    validation_engine: str
    parity: Optional[dict]          # Parity.to_dict(): agreement, max/mean |Δ|, accuracy and its change
    mismatches: List[dict]          # every check outside its tolerance
    notes: List[str]                # techniques applied or not (bias correction, QAT …)
    layer_errors: List[dict]        # int8 formats: the worst layers (layer, op, error, rmse_steps), worst first
    mixed: dict                     # tflite-int8-mixed: target, layers kept in float, the search's steps
    activation_ranges: dict         # tflite-int8: the ranges chosen (min/max or percentile), each one's agreement


class Manifest(TypedDict):
    schema_version: int
    created: str
    source: dict                    # the model converted: path, kind, sha256, labels, preprocess, data
    settings: dict
    calibration: Optional[dict]
    validation: Optional[dict]
    platform: dict
    artifacts: List[ArtifactEntry]


def tool_versions(fmt: Format) -> Dict[str, str]:
    names = list(ENGINE_TOOLS.get(fmt.engine, ())) + list(COMMON_TOOLS)
    if fmt.options.get("qat"):
        names.append("tensorflow-model-optimization")
    return package_versions(names)


def _quant(scales, zero_points) -> Optional[dict]:
    scales, zps = np.asarray(scales).ravel().tolist(), np.asarray(zero_points).ravel().tolist()
    return {"scale": scales, "zero_point": zps} if scales else None


def inspect_tflite(path: Path) -> dict:
    """Tensors and ops, read with the LiteRT interpreter without delegates (XNNPACK would hide the op list)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType
    it = Interpreter(model_path=str(path), experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)

    def tensor(d: dict) -> dict:
        q = d.get("quantization_parameters", {})
        shape = [None if v < 0 else int(v) for v in d.get("shape_signature", d["shape"])]
        return {"name": d["name"], "shape": shape, "dtype": np.dtype(d["dtype"]).name,
                "quantization": _quant(q.get("scales", []), q.get("zero_points", []))}

    ops = Counter(op["op_name"] for op in it._get_ops_details())
    return {"inputs": [tensor(d) for d in it.get_input_details()],
            "outputs": [tensor(d) for d in it.get_output_details()],
            "ops": dict(sorted(ops.items())), "embedded_metadata": sorted(read_metadata(path))}


def inspect_onnx(path: Path) -> dict:
    import onnx
    from onnx import helper
    model = onnx.load(str(path), load_external_data=False)

    def tensor(v) -> dict:
        t = v.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
        # ONNX graphs keep float I/O even when quantized: the QDQ pairs live inside the graph.
        return {"name": v.name, "shape": shape, "dtype": np.dtype(helper.tensor_dtype_to_np_dtype(t.elem_type)).name,
                "quantization": None}

    ops = Counter(n.op_type for n in model.graph.node)
    return {"inputs": [tensor(v) for v in model.graph.input], "outputs": [tensor(v) for v in model.graph.output],
            "ops": dict(sorted(ops.items())),
            # only the domains the graph uses (quant_pre_process declares a dozen it never needs)
            "opset": {o.domain or "ai.onnx": o.version for o in model.opset_import
                      if o.domain in {n.domain for n in model.graph.node} | {"", "ai.onnx"}},
            "embedded_metadata": sorted(p.key for p in model.metadata_props)}


def status_of(exported: Exported, validation: Optional[FormatValidation]) -> str:
    if not exported.ok:
        return FAILED
    return PASSED if validation is not None and validation.passed else OUTSIDE


def artifact_entry(exported: Exported, validation: Optional[FormatValidation],
                   file_path: Optional[Path] = None) -> ArtifactEntry:
    """One manifest entry; `file_path` is where the file is now (it may have been moved from staging)."""
    fmt = exported.fmt
    status = status_of(exported, validation)
    entry: ArtifactEntry = {"format": fmt.name, "file": fmt.file_name if exported.ok else None, "status": status,
             "symbol": SYMBOLS[status], "engine": fmt.engine, "summary": fmt.summary, "options": dict(fmt.options),
             "tolerance": fmt.tolerance.to_dict(), "convert_seconds": round(exported.seconds, 3),
             "tools": tool_versions(fmt)}
    if not exported.ok:
        entry["error"] = exported.error
        return entry
    path = Path(file_path or exported.path)
    entry.update(size_bytes=path.stat().st_size, sha256=file_digest(path))
    try:
        entry.update(inspect_tflite(path) if fmt.suffix == ".tflite" else inspect_onnx(path))
    except Exception as exc:  # inspection is descriptive; a failure here must not hide the parity result
        entry["inspect_error"] = f"{type(exc).__name__}: {first_line(exc)}"
    if validation is not None:
        entry["validation_engine"] = validation.engine
        entry["parity"] = validation.parity.to_dict() if validation.parity else None
        entry["mismatches"] = [m.to_dict() for m in validation.mismatches]
    if exported.notes:
        entry["notes"] = list(exported.notes)
    entry.update({k: v for k, v in exported.details.items() if k in ("layer_errors", "mixed", "activation_ranges")})
    return entry


def build(source: dict, calibration: Optional[dict], validation: Optional[dict], entries: List[ArtifactEntry],
          settings: dict) -> Manifest:
    return {"schema_version": SCHEMA_VERSION, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "source": source, "settings": settings, "calibration": calibration, "validation": validation,
            "platform": {"python": platform.python_version(), "machine": platform.machine()},
            "artifacts": entries}


def merge(previous: Optional[Manifest], current: Manifest, out_dir: Path) -> Manifest:
    """Keep earlier entries of formats not converted this time, if they belong to the same model and still exist."""
    if not previous or previous.get("source", {}).get("model_sha256") != current["source"]["model_sha256"]:
        return current
    done = {e["format"] for e in current["artifacts"]}
    kept = [e for e in previous.get("artifacts", []) if isinstance(e, dict) and e.get("format") not in done
            and (e.get("file") is None or (out_dir / e["file"]).is_file())]
    order = {name: i for i, name in enumerate(FORMATS)}
    return {**current, "artifacts": sorted(kept + current["artifacts"], key=lambda e: order.get(e["format"], len(order)))}


def _parity_text(entry: ArtifactEntry) -> str:
    p = entry.get("parity")
    if not p:
        return ""
    quantized = "min_agreement" in entry.get("tolerance", {})
    delta = p.get("accuracy_delta")
    acc = f" · acc Δ {delta * 100:+.1f} pt" if delta is not None else ""
    if quantized:
        return f"top-1 agree {p['top1_agreement']:.1%}{acc}"
    return f"max {p['max_abs_diff']:.1e} · mean {p['mean_abs_diff']:.1e}"


def table(entries: List[ArtifactEntry], title: str = "") -> Table:
    t = Table(title=title or None, title_justify="left", caption=LEGEND, caption_justify="left")
    t.add_column("status", justify="center", no_wrap=True)
    t.add_column("format", no_wrap=True)
    t.add_column("size", justify="right", no_wrap=True)
    t.add_column("parity vs source", no_wrap=True)
    t.add_column("top-1", justify="right", no_wrap=True)
    t.add_column("time", justify="right", no_wrap=True)
    t.add_column("note")
    for e in entries:
        p = e.get("parity") or {}
        acc = f"{p['accuracy']:.1%}" if p.get("accuracy") is not None else ""
        # a failure, every mismatch, and a technique the format normally gets that this model could not have
        # (e.g. bias correction): the last often explains the others
        note = e.get("error") or "; ".join(
            [m["message"].split(": ", 1)[-1] for m in e.get("mismatches") or []]
            + [n for n in e.get("notes") or [] if "not applied" in n or "skipped" in n or "kept in float" in n])
        t.add_row(e["symbol"], e["format"], fmt_size(e.get("size_bytes")), _parity_text(e), acc,
                  f"{e.get('convert_seconds', 0):.1f} s", escape(note))  # notes quote e.g. 'edgekit-runtime[onnx]'

    return t


def worst_layers(entries: List[ArtifactEntry], n: int = 3) -> List[str]:
    """For every quantized artifact outside its tolerance (❎), the line naming the layers int8 hurts most."""
    from edgekit.convert.layer_error import worst
    return [f"{e['format']}: the layers int8 hurts most (error / activation spread): {worst(e['layer_errors'], n)}; "
            f"`edge convert … --explain {e['format']}` shows them all, tflite-int8-mixed keeps the worst in float"
            for e in entries if e.get("status") == OUTSIDE and e.get("layer_errors")]


def layer_table(entry: ArtifactEntry, n: int = 20) -> Table:
    """The per-layer diagnosis of one artifact, worst first; the layers a mixed artifact kept in float marked."""
    kept = {k["layer"] for k in (entry.get("mixed") or {}).get("kept_out", [])}
    t = Table(title=f"{entry['format']}: error int8 adds per layer, worst first", title_justify="left",
              caption="error: RMSE of the int8 output against the float op on the same input, per output channel "
                      "over that channel's spread (1 = lost); steps: the RMSE in int8 steps (0.29 = rounding alone)",
              caption_justify="left")
    for col, just in (("#", "right"), ("op", "left"), ("layer", "left"), ("error", "right"), ("steps", "right"),
                      ("", "left")):
        t.add_column(col, justify=just, no_wrap=col != "layer")
    for i, e in enumerate((entry.get("layer_errors") or [])[:n], 1):
        err = "∞" if e.get("error") is None else f"{e['error']:.4f}"
        steps = "" if e.get("rmse_steps") is None else f"{e['rmse_steps']:.2f}"
        t.add_row(str(i), escape(str(e.get("op"))), escape(str(e.get("layer"))), err, steps,
                  "kept in float" if e.get("layer") in kept else "")
    return t


def read_manifest(export: Path, fix: str = "edge convert") -> Manifest:
    """An export directory's manifest.json, the one reader of it: a dict with an `artifacts` list, or one
    sentence that ends with the command that makes a new one (`fix`)."""
    path = Path(export) / MANIFEST_FILE
    if not path.is_file():
        raise EdgeError(f"{export} has no readable manifest.json: convert it first with `{fix}`.")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise EdgeError(f"{path} is not valid JSON ({exc}); rerun `{fix}`.") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("artifacts"), list):
        raise EdgeError(f"{path} lists no artifacts; rerun `{fix}`.")
    if not all(isinstance(e, dict) and e.get("format") and e.get("status") for e in manifest["artifacts"]):
        raise EdgeError(f"{path} has an artifact entry without a format or status; rerun `{fix}`.")
    return manifest


def locate_export(path: Path) -> "tuple[Path, Manifest]":
    """(export directory, its manifest) for a run directory (its export/) or an export directory itself (a
    model brought to `edge convert --out DIR`): what bench and pack both take."""
    path = Path(path)
    export = path if (path / MANIFEST_FILE).is_file() else RunLayout(path).export
    return export, read_manifest(export, f"edge convert {path}")
