"""report.json's shape (schema version 1) as types: what `edge bench` writes, every renderer reads and
`edge select` / the baseline gate compare. `rows.load_report` is its one reader; tests pin the keys."""
from __future__ import annotations

from typing import Dict, List, Optional, TypedDict

SCHEMA_VERSION = 1


class ConvertCheck(TypedDict, total=False):
    images: int                 # convert's validation images, found among the benchmarked ones
    bench: float                # top-1 on them through the runtime here
    convert: float              # what convert recorded on them
    equal: bool
    note: str                   # only when they are one image apart on enlarged images


class Accuracy(TypedDict, total=False):
    images: int
    top1: Optional[float]       # None without labels
    top5: Optional[float]
    per_class: Dict[str, dict]  # precision, recall, f1, support
    macro_f1: float
    confusion_matrix: List[List[int]]
    labelled: bool              # present (False) only for images without labels
    agreement: Optional[float]  # top-1 agreement with the reference row
    seconds: Optional[float]    # the accuracy pass on the device
    convert_check: Optional[ConvertCheck]


class Row(TypedDict, total=False):
    """One artifact on one device, or the source model's reference row (kind `reference`)."""
    name: str                   # format name (tflite-int8 …) or `keras`
    kind: str                   # reference | artifact
    device: str                 # local, or the device's id
    status: str                 # edgekit.status.Status value
    symbol: str
    reason: Optional[str]       # why the row is not ✅ (one sentence)
    file: Optional[str]
    engine: Optional[str]
    summary: Optional[str]
    size_bytes: Optional[int]
    macs: Optional[int]
    accuracy: Accuracy
    convert: dict               # {status, parity}: what convert recorded for the artifact
    cold: Optional[dict]        # load + first inference
    memory: Optional[dict]      # peak RSS
    input: Optional[dict]       # the input the runtime fed (dtype, layout)
    latency: List[dict]         # one entry per threads x batch setting
    headline: Optional[dict]    # the threads/batch setting the tables show
    layers: Optional[dict]      # int8: {errors: [{layer, op, error, rmse_steps}] worst first, kept_in_float: [layer]}


class Device(TypedDict):
    id: str
    host: Optional[str]
    fingerprint: Optional[dict]
    health_before: Optional[dict]
    health_after: Optional[dict]
    seconds: Optional[float]
    images: Optional[int]


class Report(TypedDict, total=False):
    schema_version: int
    created: str
    command: Optional[str]
    run_dir: str
    export_dir: str
    labels: List[str]
    settings: dict
    test_set: dict              # images, split, per_class
    devices: List[Device]
    rows: List[Row]
    comparison: Optional[dict]  # against --baseline
    recommendation: list        # the artifact to ship per device (edge select's rule)
