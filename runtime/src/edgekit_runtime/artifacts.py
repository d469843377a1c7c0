"""Finding the model in an export directory, and its labels and preprocessing.

An export directory holds one or more artifacts (.tflite / .onnx) beside `labels.txt`,
`preprocess.json` and optionally `manifest.json`. Labels and preprocessing are taken from the
side files when present (they are what a user sees and may edit), else from metadata embedded in
the artifact, so that a lone model file copied to a device still classifies correctly:

- ONNX: `metadata_props` keys `labels` (JSON list) and `preprocess` (JSON of PreprocessSpec.to_dict()),
  or one key `edgekit` holding {"labels": [...], "preprocess": {...}};
- TFLite: a Model.metadata entry named `edgekit` holding that same JSON, or files zipped onto the
  model the TFLite-Support way (`labels.txt` or another *label*.txt, `preprocess.json`).

An export directory may have been copied from elsewhere and edited: every file a manifest names must stay
inside the directory (no absolute path, no '..', links resolved) and be a regular file, side files are
regular files inside the model's folder read up to a cap, and a model the manifest lists with a sha256 must
match it (verify_model). A breach is one ModelError/SpecError sentence, and nothing outside is opened.
"""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

from .engines import model_suffixes
from .errors import ModelError, SpecError
from .files import contained, inside, read_capped, regular_file, sha256_of
from .preprocess import PreprocessSpec, parse_json

LABELS_FILE, PREPROCESS_FILE, MANIFEST_FILE = "labels.txt", "preprocess.json", "manifest.json"
METADATA_NAME = "edgekit"


def list_models(directory: Path) -> Dict[str, Path]:
    """Choosable artifacts of an export directory: manifest names first, then any other model file.

    Every file must lie inside `directory` (links resolved): a manifest entry or a link pointing elsewhere is
    refused with ModelError, never loaded."""
    found: Dict[str, Path] = {}
    seen = set()
    suffixes = model_suffixes()
    for entry in manifest_entries(directory):
        if entry.path.suffix.lower() in suffixes and entry.exists and entry.real not in seen:
            found[entry.name] = entry.path
            seen.add(entry.real)
    try:
        listing = sorted(directory.iterdir())
    except OSError as exc:
        raise ModelError(f"{directory}: cannot list this directory ({exc.strerror or exc}).") from None
    for path in listing:
        if path.suffix.lower() not in suffixes or not path.is_file():
            continue  # is_file() stats without opening: a FIFO named x.tflite is passed over, not opened
        if not inside(directory, path):
            raise ModelError(f"{path}: links to {os.path.realpath(path)}, outside {directory}; only model files "
                             "inside an export directory are loaded (copy the file in, or give its path).")
        real = os.path.realpath(path)
        if real not in seen:
            found[path.name] = path
            seen.add(real)
    return found


def resolve_model(path: "str | os.PathLike", format: Optional[str] = None) -> Path:
    """The model file meant by `path` (a model file, or an export directory plus a format choice)."""
    p = Path(path)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise ModelError(f"{p}: no such model file or directory.") from None
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the name
        raise ModelError(f"{p}: cannot open this model ({getattr(exc, 'strerror', None) or exc}).") from None
    if not stat.S_ISDIR(st.st_mode):
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


MANIFEST_LIMIT = 16 << 20     # bytes; convert writes a few kB
LABELS_LIMIT = 16 << 20       # bytes; 21 000 ImageNet classes are under 1 MB
_HEX = frozenset("0123456789abcdef")


@dataclass
class ManifestEntry:
    name: str
    path: Path                # directory / file as the manifest writes it (checked to stay inside)
    sha256: Optional[str]     # what convert recorded, lower-case hex; None when the manifest gives none
    exists: bool
    real: str = ""            # the path with links resolved


def manifest_entries(directory: Path) -> List[ManifestEntry]:
    """The artifacts manifest.json lists, tolerant of the shapes an exporter may write:
    {"artifacts": [{"format"|"name": .., "file"|"path"|"filename": .., "sha256": ..}, ..]} or
    {"artifacts": {name: file | {..}}}. An entry whose file is null (a failed export) or missing is skipped; one
    that is absolute, climbs with '..', resolves outside `directory` or is not a regular file, a malformed
    sha256 or a manifest that is not such JSON is refused with ModelError (one sentence)."""
    path = directory / MANIFEST_FILE
    if not os.path.lexists(path):
        return []
    data = parse_json(read_capped(path, MANIFEST_LIMIT, ModelError, "manifest"), str(path), ModelError, "manifest")
    if not isinstance(data, dict):
        raise ModelError(f"{path}: a manifest holds a JSON object with an 'artifacts' list.")
    artifacts = data.get("artifacts", data.get("models"))
    if artifacts is None:
        return []
    if isinstance(artifacts, dict):
        items = list(artifacts.items())
    elif isinstance(artifacts, list):
        items = [(None, item) for item in artifacts]
    else:
        raise ModelError(f"{path}: 'artifacts' must be a list of entries, not {type(artifacts).__name__}.")
    entries: List[ManifestEntry] = []
    for i, (key, value) in enumerate(items):
        where = f"{path} (artifact {key!r})" if key is not None else f"{path} (artifact {i + 1})"
        digest = None
        if isinstance(value, str):
            file, name = value, key
        elif isinstance(value, dict):
            keys = [k for k in ("file", "path", "filename") if value.get(k) is not None]
            file = value[keys[0]] if keys else None
            name = next((value[k] for k in ("format", "name") if value.get(k) is not None), key)
            digest = value.get("sha256")
        else:
            raise ModelError(f"{where}: an entry must be an object or a file name, not {type(value).__name__}.")
        if file is None:
            continue  # an export that failed: the manifest records it without a file
        file_path = contained(directory, file, ModelError, where)
        if name is not None and not isinstance(name, str):
            raise ModelError(f"{where}: the format name must be text, not {type(name).__name__}.")
        if digest is not None and not (isinstance(digest, str) and len(digest) == 64 and set(digest.lower()) <= _HEX):
            raise ModelError(f"{where}: 'sha256' must be 64 hexadecimal digits, not {_short(digest)}.")
        exists = os.path.lexists(file_path)
        if exists:
            try:
                regular_file(file_path, ModelError, "model file")
            except ModelError as exc:
                raise ModelError(f"{where} names {exc}") from None
        entries.append(ManifestEntry(name or file_path.name, file_path, digest.lower() if digest else None, exists,
                                     os.path.realpath(file_path) if exists else ""))
    return entries


def verify_model(model: Path) -> Optional[str]:
    """Check `model` against the sha256 that manifest.json beside it records for it, if any: ModelError with
    both digests on a mismatch. Returns the digest checked (None: the manifest names no digest for it)."""
    entries = manifest_entries(model.parent)
    real = os.path.realpath(model)
    wanted = [e for e in entries if e.exists and e.real == real and e.sha256]
    if not wanted:
        return None
    actual = sha256_of(model, ModelError)
    expected = wanted[0].sha256
    if actual != expected:
        raise ModelError(f"{model}: sha256 {actual} does not match {expected} recorded in "
                         f"{model.parent / MANIFEST_FILE}; the model was changed after export (pass --no-verify, "
                         "Python: verify=False, to load it anyway).")
    return actual


def _short(value: object, limit: int = 70) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


@dataclass
class ModelInfo:
    """What the files beside a model and the model's own metadata say about it."""

    labels: Optional[List[str]] = None
    labels_source: str = ""
    spec: Optional[PreprocessSpec] = None
    spec_source: str = ""
    embedded: Dict[str, object] = field(default_factory=dict)
    integrity: str = ""   # what the sha256 check found, for `edge-run info`


def read_labels(path: Path) -> List[str]:
    """labels.txt, the one reader every stage uses: one class per line in output order, surrounding spaces and
    blank lines dropped (so "cat " is "cat" in training, convert and on the device alike), no class twice."""
    raw = read_capped(path, LABELS_LIMIT, ModelError, "labels file")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ModelError(f"{path}: cannot read labels (not UTF-8 text: byte {exc.start}).") from None
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
    error = SpecError if key in ("preprocess", PREPROCESS_FILE) else ModelError
    if len(raw) > MANIFEST_LIMIT:
        raise error(f"{model}: embedded metadata {key!r} is {len(raw)} bytes, more than this runtime reads.")
    return parse_json(raw if isinstance(raw, bytes) else str(raw).encode("utf-8", "surrogatepass"),
                      f"{model} (embedded {key!r})", error, "JSON document")


def _side_file(model: Path, name: str, error, what: str) -> Optional[Path]:
    """The side file `name` beside `model` if there is one: a regular file inside the model's folder (links
    resolved), else `error`; a FIFO or a link to /dev/zero must not hang or flood the loader."""
    path = model.parent / name
    if not os.path.lexists(path):
        return None
    if not inside(model.parent, path):
        raise error(f"{path}: links to {os.path.realpath(path)}, outside {model.parent}; copy the file in "
                    "instead of linking it.")
    regular_file(path, error, what)
    return path


def gather(model: Path, metadata: Dict[str, bytes]) -> ModelInfo:
    info = ModelInfo()
    side_labels = _side_file(model, LABELS_FILE, ModelError, "labels file")
    side_spec = _side_file(model, PREPROCESS_FILE, SpecError, "preprocess.json")
    info.embedded = embedded_info(model, metadata)
    if side_labels is not None:
        info.labels, info.labels_source = read_labels(side_labels), str(side_labels)
    elif info.embedded.get("labels") is not None:
        labels = info.embedded["labels"]
        if not isinstance(labels, list) or not labels or not all(isinstance(v, str) and v.strip() for v in labels):
            raise ModelError(f"{model}: embedded labels must be a non-empty JSON list of names.")
        info.labels, info.labels_source = list(labels), f"{model.name} (embedded)"
    if side_spec is not None:
        info.spec, info.spec_source = PreprocessSpec.load(side_spec), str(side_spec)
    elif info.embedded.get("preprocess") is not None:
        source = f"{model} (embedded preprocess metadata)"
        info.spec, info.spec_source = PreprocessSpec.from_dict(info.embedded["preprocess"], source), \
            f"{model.name} (embedded)"
    return info
