"""Where every stage reads and writes inside a run directory: the one place the names of its files and folders
live (train writes the top, convert export/, bench bench/, pack pack/). The runtime's own side files
(labels.txt, preprocess.json, manifest.json) are named by edgekit_runtime.artifacts and used from there.

    model.keras        trained tf_keras model (image in, probabilities out; preprocessing outside)
    labels.txt         one class name per line, in output order
    preprocess.json    how pixels become model input (edgekit_runtime.PreprocessSpec)
    config.yaml        the resolved training configuration (what --resume reads)
    run.json           data source and hash, class counts, library versions, seeds, status
    metrics.json       test metrics, timings, feature-cache hit
    history.json       per-epoch logs of each phase
    training_curves.png, confusion_matrix.png
    checkpoints/<phase>/  last.keras, best.weights.h5, state.json (for --resume)
    export/            edge convert: one file per format, manifest.json, labels.txt, preprocess.json
    bench/             edge bench: report.json, report.md, report.html, plots
    pack/              edge pack: bundles
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgekit_runtime.artifacts import LABELS_FILE, MANIFEST_FILE, PREPROCESS_FILE

MODEL, CONFIG, RUN_INFO, METRICS, HISTORY = "model.keras", "config.yaml", "run.json", "metrics.json", "history.json"
CURVES, CONFUSION = "training_curves.png", "confusion_matrix.png"
CHECKPOINTS, EXPORT, BENCH, PACK = "checkpoints", "export", "bench", "pack"
REPORT_JSON, REPORT_MD, REPORT_HTML = "report.json", "report.md", "report.html"


@dataclass(frozen=True)
class RunLayout:
    """The paths of one run directory; nothing is created or checked here."""

    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    model = property(lambda self: self.root / MODEL)
    config = property(lambda self: self.root / CONFIG)
    run_info = property(lambda self: self.root / RUN_INFO)
    metrics = property(lambda self: self.root / METRICS)
    history = property(lambda self: self.root / HISTORY)
    curves = property(lambda self: self.root / CURVES)
    confusion = property(lambda self: self.root / CONFUSION)
    labels = property(lambda self: self.root / LABELS_FILE)
    preprocess = property(lambda self: self.root / PREPROCESS_FILE)
    checkpoints = property(lambda self: self.root / CHECKPOINTS)
    export = property(lambda self: self.root / EXPORT)
    manifest = property(lambda self: self.root / EXPORT / MANIFEST_FILE)
    bench = property(lambda self: self.root / BENCH)
    report = property(lambda self: self.root / BENCH / REPORT_JSON)
    pack = property(lambda self: self.root / PACK)

    def checkpoint(self, phase: str) -> Path:
        return self.checkpoints / phase


# what each later stage needs of a run: the file whose presence says the stage before it finished
FINISHED = {"trained": "model", "converted": "manifest", "benchmarked": "report"}


def latest(kind: str, runs: Path = Path("runs")) -> "Path | None":
    """The newest run under `runs` that is `kind` (trained, converted or benchmarked), by that file's time."""
    attr = FINISHED[kind]
    found = [RunLayout(d) for d in Path(runs).iterdir() if d.is_dir()] if Path(runs).is_dir() else []
    done = [r for r in found if getattr(r, attr).is_file()]
    return max(done, key=lambda r: getattr(r, attr).stat().st_mtime).root if done else None


if __name__ == "__main__":  # the Makefile's default RUN: python -m edgekit.layout latest converted [runs]
    import sys
    if len(sys.argv) < 3 or sys.argv[1] != "latest" or sys.argv[2] not in FINISHED:
        sys.exit(f"usage: python -m edgekit.layout latest {{{','.join(FINISHED)}}} [RUNS_DIR]")
    newest = latest(sys.argv[2], Path(sys.argv[3]) if len(sys.argv) > 3 else Path("runs"))
    if newest is not None:
        print(newest)
