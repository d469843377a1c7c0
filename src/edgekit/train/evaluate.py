"""`edge evaluate`: recompute a run's test metrics from its saved model, on its own data or another."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

import numpy as np

from edgekit.atomic import write_json
from edgekit.errors import EdgeError
from edgekit.train import models, plots
from edgekit.train.data import load_dataset
from edgekit.train.metrics import classification_report
from edgekit.train.pipeline import make_dataset
from edgekit.train.rundir import read_finished_run
from edgekit.layout import RunLayout


def evaluate(run_dir: Path, data: Optional[str] = None, batch_size: int = 128, tta: str = "none") -> dict:
    """Test metrics of the run's model (written into metrics.json), or with `tta="flip"` of the model with flip
    averaging wrapped around it (recorded under `tta_flip`, the run's own `test` left as it is)."""
    if tta not in models.TTA:
        raise EdgeError(f"--tta must be one of {', '.join(models.TTA)}, not {tta!r}.")
    run_dir = Path(run_dir)
    cfg, spec, labels = read_finished_run(run_dir)
    ds_src = data or cfg.data
    same_data = data is None
    dataset = load_dataset(ds_src, spec.size, val_fraction=cfg.val_fraction, test_fraction=cfg.test_fraction,
                           seed=cfg.seed, limit_per_class=cfg.limit_per_class if same_data else None,
                           test_limit_per_class=cfg.test_limit_per_class if same_data else None,
                           skip_bad=cfg.skip_bad, use_cache=cfg.data_cache, cache_dir=cfg.cache_dir)
    if dataset.class_names != labels:
        missing = sorted(set(dataset.class_names) - set(labels))
        if missing:
            raise EdgeError(f"{ds_src} has classes the model does not know: {', '.join(missing)}.")
        # the data may hold a subset of the classes: map its label indices onto the model's outputs
        remap = np.array([labels.index(c) for c in dataset.class_names], np.int32)
        dataset.test.y = remap[dataset.test.y]
    model = models.with_tta(models.load_model(RunLayout(run_dir).model), tta)
    t0 = time.perf_counter()
    probs = model.predict(make_dataset(dataset.test.x, None, spec, batch_size, num_classes=len(labels)), verbose=0)
    seconds = time.perf_counter() - t0
    report = classification_report(dataset.test.y, probs, labels)
    report["data"] = {"source": dataset.source, "hash": dataset.data_hash}
    report["inference_images_per_second"] = len(probs) / seconds if seconds else None
    metrics_path = RunLayout(run_dir).metrics
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    key = "test" if same_data else "evaluations"
    if tta != "none":
        report["tta"] = tta
        metrics.setdefault(f"tta_{tta}", {})["test" if same_data else dataset.data_hash[:12]] = report
    elif same_data:
        metrics["test"] = report
        plots.confusion_matrix(report["confusion_matrix"], labels, RunLayout(run_dir).confusion,
                               f"test top-1 {report['top1']:.2%} ({report['images']:,} images)")
    else:
        metrics.setdefault(key, {})[dataset.data_hash[:12]] = report
    write_json(metrics_path, metrics)
    return report
