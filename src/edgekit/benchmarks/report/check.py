"""report.json's values checked before anything reads them: types, ranges and paths of every row.

A report may come from another machine or be edited by hand, so `rows.load_report` hands every row here:
a value a benchmark cannot produce (a negative latency, a top-1 above 1, an artifact file outside the export
folder) is refused in one sentence instead of being ranked, plotted or joined to a path.
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Optional

from edgekit_runtime.files import leaves_folder
from edgekit.errors import EdgeError
from edgekit.status import Status

MAX_TEXT = 2000                          # a name or reason longer than this is not one sentence
NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.+")
STATUSES = {s.value for s in Status}
KINDS = {"reference", "artifact"}
FRACTIONS = ("top1", "top5", "agreement", "macro_f1")   # accuracy fields in [0, 1]


def check_rows(rows: Iterable[Any], where: str) -> None:
    for i, row in enumerate(rows):
        check_row(row, f"{where} row {i + 1}")


def check_row(row: Any, where: str) -> None:
    if not isinstance(row, dict):
        raise EdgeError(f"{where} is not an object.")
    name = row.get("name")
    if not isinstance(name, str) or not name or len(name) > 100 or not set(name) <= NAME_CHARS:
        raise EdgeError(f"{where} has the artifact name {_show(name)}: names are format names "
                        "(letters, digits, - _ . +); rerun `edge bench`.")
    where = f"{where} ({name})"
    if not isinstance(row.get("status"), str) or row["status"] not in STATUSES:
        raise EdgeError(f"{where} has the status {_show(row.get('status'))}; expected one of {', '.join(sorted(STATUSES))}.")
    if row.get("kind") is not None and (not isinstance(row["kind"], str) or row["kind"] not in KINDS):
        raise EdgeError(f"{where} has the kind {_show(row.get('kind'))}; expected reference or artifact.")
    for key in ("reason", "device", "engine", "summary", "symbol"):
        value = row.get(key)
        if value is not None and (not isinstance(value, str) or len(value) > MAX_TEXT):
            raise EdgeError(f"{where}: '{key}' must be a short text, got {_show(value)}.")
    if row.get("kind") != "reference":   # the reference row names the source model wherever it is
        _check_file(row.get("file"), where)
    elif row.get("file") is not None and not isinstance(row.get("file"), str):
        raise EdgeError(f"{where}: 'file' must be a path, got {_show(row.get('file'))}.")
    _non_negative(row.get("size_bytes"), where, "size_bytes")
    _non_negative(row.get("macs"), where, "macs")
    accuracy = row.get("accuracy")
    if isinstance(accuracy, dict):
        for key in FRACTIONS:
            value = _number(accuracy.get(key), where, f"accuracy.{key}")
            if value is not None and not 0.0 <= value <= 1.0:
                raise EdgeError(f"{where}: accuracy.{key} is {value:g}, outside 0 to 1.")
    for section in ("cold", "memory"):
        block = row.get(section)
        if isinstance(block, dict):
            for key, value in block.items():
                if key.endswith(("_s", "_mb")):
                    _non_negative(value, where, f"{section}.{key}")
    _check_layers(row.get("layers"), where)
    latency = row.get("latency")
    if latency is not None and not isinstance(latency, list):
        raise EdgeError(f"{where}: 'latency' must be a list.")
    for entry in latency or []:
        if not isinstance(entry, dict):
            raise EdgeError(f"{where}: a latency entry is not an object.")
        for kind in ("bare", "run", "e2e"):
            stats = entry.get(kind)
            if isinstance(stats, dict):
                for key, value in stats.items():
                    if key.endswith(("_ms", "_s")):
                        for v in value if isinstance(value, list) else [value]:   # samples_ms is a list
                            _non_negative(v, where, f"latency {kind}.{key}")


def _check_layers(layers: Any, where: str) -> None:
    """convert's per-layer diagnosis: layer names and op types as short texts, errors finite and not negative."""
    if layers is None:
        return
    if not isinstance(layers, dict) or not isinstance(layers.get("errors", []), list) \
            or not isinstance(layers.get("kept_in_float", []), list):
        raise EdgeError(f"{where}: 'layers' must hold lists of errors and of layers kept in float.")
    for entry in layers.get("errors", []):
        if not isinstance(entry, dict) or not all(isinstance(entry.get(k), str) and len(entry[k]) <= MAX_TEXT
                                                  for k in ("layer", "op")):
            raise EdgeError(f"{where}: a layer error must name its layer and op, got {_show(entry)}.")
        _non_negative(entry.get("error"), where, f"the error of layer {_show(entry['layer'])}")
        _non_negative(entry.get("rmse_steps"), where, f"rmse_steps of layer {_show(entry['layer'])}")
    for name in layers.get("kept_in_float", []):
        if not isinstance(name, str) or len(name) > MAX_TEXT:
            raise EdgeError(f"{where}: a layer kept in float must be named, got {_show(name)}.")


def _check_file(file: Any, where: str) -> None:
    """An artifact file is a relative path inside the export folder; others would be read or packed from
    anywhere on the machine."""
    if file is None:
        return
    if not isinstance(file, str) or not file or len(file) > 255:
        raise EdgeError(f"{where}: 'file' must be a file name, got {_show(file)}.")
    if leaves_folder(file):
        raise EdgeError(f"{where}: the artifact file {_show(file)} is outside the export folder.")


def _number(value: Any, where: str, key: str) -> Optional[float]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise EdgeError(f"{where}: {key} must be a finite number, got {_show(value)}.")
    return float(value)


def _non_negative(value: Any, where: str, key: str) -> None:
    number = _number(value, where, key)
    if number is not None and number < 0:
        raise EdgeError(f"{where}: {key} is {number:g}; a measurement cannot be negative.")


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
