"""Finding the model in an export directory, and its labels and preprocessing.

An export directory holds one or more artifacts (.tflite / .onnx) beside `labels.txt`,
`preprocess.json` and optionally `manifest.json`. Labels and preprocessing are taken from the
side files when present (they are what a user sees and may edit), else from metadata embedded in
the artifact, so that a lone model file copied to a device still classifies correctly:

- ONNX: `metadata_props` keys `labels` (JSON list) and `preprocess` (JSON of PreprocessSpec.to_dict()),
  or one key `edgekit` holding {"labels": [...], "preprocess": {...}};
- TFLite: a Model.metadata entry named `edgekit` holding that same JSON, or files zipped onto the
  model the TFLite-Support way (`labels.txt` or another *label*.txt, `preprocess.json`).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from .engines import model_suffixes
from .errors import ModelError, SpecError
from .preprocess import PreprocessSpec

LABELS_FILE, PREPROCESS_FILE, MANIFEST_FILE = "labels.txt", "preprocess.json", "manifest.json"
METADATA_NAME = "edgekit"


def list_models(directory: Path) -> Dict[str, Path]:
    """Choosable artifacts of an export directory: manifest names first, then any other model file."""
    found: Dict[str, Path] = {}
    suffixes = model_suffixes()
    for name, file in _manifest_entries(directory):
        path = (directory / file)
        if path.suffix.lower() in suffixes and path.is_file() and path not in found.values():
            found[name] = path
    for path in sorted(directory.iterdir()):
        if path.suffix.lower() in suffixes and path.is_file() and path not in found.values():
            found[path.name] = path
    return found


def resolve_model(path: "str | os.PathLike", format: Optional[str] = None) -> Path:
    """The model file meant by `path` (a model file, or an export directory plus a format choice)."""
    p = Path(path)
    if not p.exists():
        raise ModelError(f"{p}: no such model file or directory.")
    if not p.is_dir():
        return p
    choices = list_models(p)
    if not choices:
        hint = (" (model.keras is the training model: export it to .tflite or .onnx first)"
                if (p / "model.keras").exists() else "")
        raise ModelError(f"{p}: no {' or '.join(model_suffixes())} model in this directory{hint}.")
    if format is None:
        if len(choices) == 1:
            return next(iter(choices.values()))
        raise ModelError(f"{p} holds several models ({_listing(choices)}); choose one with --format NAME "
                         "(Python: format=NAME) or give the model file itself.")
    matches = {name: path for name, path in choices.items() if _matches(format, name, path)}
    if len(matches) == 1:
        return next(iter(matches.values()))
    if not matches:
        raise ModelError(f"{p}: no model matches format {format!r}; available: {_listing(choices)}.")
    raise ModelError(f"{p}: format {format!r} is ambiguous, it matches {_listing(matches)}; "
                     "use a full file name.")


def _matches(format: str, name: str, path: Path) -> bool:
    # "int8" finds model_int8.tflite, "fp32.onnx" finds model_fp32.onnx, "onnx" the only .onnx file.
    f = format.lower()
    stem, file = path.stem.lower(), path.name.lower()
    return (f in (name.lower(), file, stem, path.suffix.lower().lstrip("."))
            or any(s.endswith(("_" + f, "-" + f, "." + f)) for s in (stem, file)))


def _listing(choices: Dict[str, Path]) -> str:
    return ", ".join(name if name == path.name else f"{name} ({path.name})" for name, path in choices.items())


def _manifest_entries(directory: Path) -> List[Tuple[str, str]]:
    """(format name, relative file) pairs from manifest.json, tolerant of the shapes an exporter may write:
    {"artifacts": [{"format"|"name": .., "file"|"path"|"filename": ..}, ..]} or {"artifacts": {name: file | {..}}}."""
    path = directory / MANIFEST_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ModelError(f"{path}: not a readable manifest ({exc}).") from None
    artifacts = data.get("artifacts", data.get("models")) if isinstance(data, dict) else None
    entries: List[Tuple[str, str]] = []
    if isinstance(artifacts, dict):
        items = list(artifacts.items())
    elif isinstance(artifacts, list):
        items = [(None, item) for item in artifacts]
    else:
        return []
    for key, value in items:
        if isinstance(value, str):
            file, name = value, key
        elif isinstance(value, dict):
            file = value.get("file") or value.get("path") or value.get("filename")
            name = value.get("format") or value.get("name") or key
        else:
            continue
        if isinstance(file, str) and file:
            entries.append((str(name) if name else Path(file).name, file))
    return entries


@dataclass
class ModelInfo:
    """What the files beside a model and the model's own metadata say about it."""

    labels: Optional[List[str]] = None
    labels_source: str = ""
    spec: Optional[PreprocessSpec] = None
    spec_source: str = ""
    embedded: Dict[str, object] = field(default_factory=dict)


def read_labels(path: Path) -> List[str]:
    """labels.txt, the one reader every stage uses: one class per line in output order, surrounding spaces and
    blank lines dropped (so "cat " is "cat" in training, convert and on the device alike), no class twice."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ModelError(f"{path}: no such labels file.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelError(f"{path}: cannot read labels ({exc}).") from None
    labels = [line.strip() for line in text.splitlines() if line.strip()]
    if not labels:
        raise ModelError(f"{path}: the labels file is empty.")
    twice = sorted({x for x in labels if labels.count(x) > 1})
    if twice:
        raise ModelError(f"{path}: the labels file lists {', '.join(map(repr, twice[:3]))} more than once.")
    return labels


def embedded_info(model: Path, metadata: Dict[str, bytes]) -> Dict[str, object]:
    """{"labels": [...], "preprocess": {...}} found inside the artifact (either may be missing)."""
    found: Dict[str, object] = {}
    combined = _json(metadata.get(METADATA_NAME), model, METADATA_NAME)
    if isinstance(combined, dict):
        found.update({k: combined[k] for k in ("labels", "preprocess") if k in combined})
    for key in ("labels", "preprocess"):
        if key in metadata and key not in found:
            found[key] = _json(metadata[key], model, key)
    if model.suffix.lower() == ".tflite" and not {"labels", "preprocess"} <= set(found):
        from .tflite_meta import read_associated_files
        files = read_associated_files(model)
        label_files = [n for n in files if n.lower().endswith(".txt") and "label" in Path(n).name.lower()]
        if "labels" not in found and label_files:
            found["labels"] = [ln.strip() for ln in files[sorted(label_files)[0]].decode("utf-8", "replace")
                               .splitlines() if ln.strip()]
        spec_files = [n for n in files if Path(n).name == PREPROCESS_FILE]
        if "preprocess" not in found and spec_files:
            found["preprocess"] = _json(files[spec_files[0]], model, PREPROCESS_FILE)
    return found


def _json(raw: Optional[bytes], model: Path, key: str):
    if raw is None:
        return None
    try:
        return json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ModelError(f"{model}: embedded metadata {key!r} is not valid JSON ({exc}).") from None


def gather(model: Path, metadata: Dict[str, bytes]) -> ModelInfo:
    info = ModelInfo()
    side_labels, side_spec = model.parent / LABELS_FILE, model.parent / PREPROCESS_FILE
    info.embedded = embedded_info(model, metadata)
    if side_labels.is_file():
        info.labels, info.labels_source = read_labels(side_labels), str(side_labels)
    elif info.embedded.get("labels") is not None:
        labels = info.embedded["labels"]
        if not isinstance(labels, list) or not labels:
            raise ModelError(f"{model}: embedded labels must be a non-empty JSON list.")
        info.labels, info.labels_source = [str(v) for v in labels], f"{model.name} (embedded)"
    if side_spec.is_file():
        info.spec, info.spec_source = PreprocessSpec.load(side_spec), str(side_spec)
    elif isinstance(info.embedded.get("preprocess"), dict):
        try:
            info.spec = PreprocessSpec.from_dict(info.embedded["preprocess"])
        except (TypeError, ValueError) as exc:
            raise SpecError(f"{model}: embedded preprocess metadata is invalid ({exc}).") from None
        info.spec_source = f"{model.name} (embedded)"
    elif info.embedded.get("preprocess") is not None:
        raise SpecError(f"{model}: embedded preprocess metadata must be a JSON object.")
    return info
