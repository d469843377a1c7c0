"""`edge convert`: source → calibration/validation images → export every format → validate → publish.

Everything is built in a staging directory beside the output; only when all formats are exported
and validated are the files moved into place (each move is an atomic rename) and manifest.json is
written, last. An interrupted or failed run leaves the previous export untouched.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, List, Optional, Sequence, Tuple

from edgekit.atomic import clear_dead_staging, make_staging, write_json, write_text
from edgekit.convert import manifest as mf
from edgekit.convert.context import ExportContext, Exported
from edgekit.convert.export import export_all
from edgekit.convert.config import ConvertConfig
from edgekit.convert.formats import resolve_formats
from edgekit.convert.validate import ValidationReport, reference, validate
from edgekit.errors import EdgeError
from edgekit.progress import console
from edgekit.signals import interrupts_deferred, sigterm_as_interrupt
from edgekit_runtime.artifacts import LABELS_FILE, PREPROCESS_FILE

if TYPE_CHECKING:
    from edgekit.convert.source import Source

from edgekit_runtime.exits import Exit
from edgekit.convert.onnx_to_tf import missing
from edgekit.convert.formats import FORMATS, suggest

SEARCH_SAMPLES = 2000   # val-split images the mixed search scores on: ±0.16 pt of agreement near 99.5 %, not ±0.3


@dataclass
class ConvertReport:
    out_dir: Path
    manifest: dict
    exported: List[Exported] = field(default_factory=list)
    validation: Optional[ValidationReport] = None

    @property
    def entries(self) -> List[dict]:
        done = {e.fmt.name for e in self.exported}
        return [e for e in self.manifest["artifacts"] if e["format"] in done]

    @property
    def all_passed(self) -> bool:
        return all(e["status"] == mf.PASSED for e in self.entries)

    @property
    def exit_code(self) -> int:
        return 0 if self.all_passed else Exit.OUTSIDE_TOLERANCE


def open_source(cfg: ConvertConfig) -> "Source":
    from edgekit.convert.source import open_model, open_onnx, open_run  # TensorFlow: once the input is known good
    path = Path(cfg.source)
    scale, offset = cfg.scale, cfg.offset
    if cfg.mean or cfg.std:
        if scale or offset:
            raise EdgeError("give the preprocessing either as --scale/--offset or as --mean/--std, not both.")
        if not (cfg.mean and cfg.std):
            raise EdgeError("--mean and --std go together.")
        from edgekit.convert.onnx_source import mean_std
        scale, offset = mean_std(cfg.mean, cfg.std)
    saved_model = any((path / n).is_file() for n in ("saved_model.pb", "saved_model.pbtxt", "keras_metadata.pb"))
    if path.is_dir() and not saved_model:
        byo = [name for name, v in (("--input-size", cfg.input_size), ("--scale", cfg.scale), ("--offset", cfg.offset),
                                    ("--labels", cfg.labels)) if v]
        if byo:
            console.print(f"note: {path} is a run directory; ignoring {', '.join(byo)} (the run's own files say it).")
        return open_run(path, cfg.data)
    if not path.exists():
        raise EdgeError(f"{path} does not exist (expected a run directory, a .keras/.h5 file or a SavedModel directory).")
    if not scale or not offset:
        raise EdgeError(f"{path.name} is not an `edge train` run: give its preprocessing with --scale and --offset "
                        "(model_input = pixel_0_to_255 * scale + offset; e.g. --scale 0.00392157 --offset 0 for [0, 1]) "
                        "or --mean/--std (PyTorch's), --labels FILE and, if the model does not fix it, --input-size H W.")
    opener = open_onnx if path.suffix.lower() == ".onnx" else open_model
    return opener(path, input_size=cfg.input_size, scale=scale, offset=offset, labels_file=cfg.labels,
                  data=cfg.data, channel_order=cfg.channel_order, seed=cfg.seed if cfg.seed is not None else 42)


def parse_numbers(items: Sequence[str], option: str) -> Tuple[float, ...]:
    """'0.5' / '0.5,0.4,0.3' / repeated options → floats (the CLI's --scale and --offset)."""
    values = []
    for item in items:
        for part in str(item).replace(" ", ",").split(","):
            if part:
                try:
                    values.append(float(part))
                except ValueError:
                    raise EdgeError(f"{option} takes numbers, got {part!r}.") from None
    return tuple(values)


def _check_numbers(cfg: ConvertConfig) -> None:
    for name, value in (("--calib-samples", cfg.calib_samples), ("--val-samples", cfg.val_samples)):
        if value < 1:
            raise EdgeError(f"{name} must be at least 1, got {value}.")
    if cfg.qat_epochs < 1:
        raise EdgeError(f"--qat-epochs must be at least 1, got {cfg.qat_epochs}.")
    if cfg.channel_order not in ("RGB", "BGR"):
        raise EdgeError(f"--channel-order must be RGB or BGR, not {cfg.channel_order!r}.")


def convert(cfg: ConvertConfig) -> ConvertReport:
    """Export and validate every requested format; raises EdgeError only for bad input (nothing written)."""
    with sigterm_as_interrupt():  # `kill` cleans up the staging directory just like Ctrl-C
        return _convert(cfg)


def _convert(cfg: ConvertConfig) -> ConvertReport:
    formats = resolve_formats(_with_explained(cfg), io=cfg.io, opset=cfg.opset,
                              min_agreement=cfg.min_agreement,
                              keep_float=cfg.keep_float, max_slowdown=cfg.max_slowdown)  # cheap checks first
    _check_numbers(cfg)
    source = open_source(cfg)
    if cfg.skip_bad:
        source.data_options["skip_bad"] = True
    if source.kind == "onnx" and cfg.formats in (None, "default"):
        # the default set is what this kind of source can give; naming a TFLite format gets its ❌ row and reason
        formats = [f for f in formats if f.unsupported_reason("onnx") is None]
        why = missing()
        console.print(f"an ONNX source: converting {', '.join(f.name for f in formats)} "
                      + (f"(no TFLite formats: {why})" if why else "(the TFLite formats through onnx2tf)"),
                      highlight=False)
    from edgekit.convert import calibration as cal
    seed = cfg.seed if cfg.seed is not None else source.seed
    out_dir = Path(cfg.out) if cfg.out else source.default_out
    if out_dir.exists() and not out_dir.is_dir():
        raise EdgeError(f"output {out_dir} exists and is not a directory.")

    dataset = cal.load_images(source, cfg.data)
    calib = search = None
    calibrated = any(f.calibrated for f in formats)
    if not dataset.labeled:
        calib, val, said = cal.unlabeled_images(dataset, cfg.calib_samples if calibrated else None, cfg.val_samples,
                                                seed, source.spec)
        console.print(f"{dataset.source}: {said}", highlight=False, soft_wrap=True)
    else:
        if calibrated:
            calib = cal.calibration_images(dataset.train.x, dataset.train.y, cfg.calib_samples, seed, source.spec,
                                           source.labels)
        val = cal.validation_images(dataset, cfg.val_samples, seed, source.spec, source.labels)
        if any(f.options.get("diagnose") or f.options.get("mixed") for f in formats):   # ranges chosen, searches
            search = cal.search_images(dataset, SEARCH_SAMPLES, seed, source.spec, source.labels, val)
        short = [f"{what} {len(got):,} of {asked:,} asked" for what, got, asked in
                 (("calibration", calib, cfg.calib_samples), ("validation", val, cfg.val_samples))
                 if got is not None and len(got) < asked]
        if short:
            console.print(f"note: the data has fewer images than asked; using {', '.join(short)}.", highlight=False)
    ref = reference(source.model, val)
    _warn_if_not_probabilities(ref.probs)
    train_split = None if not dataset.labeled else \
        (lambda: cal.Images(dataset.train.x, dataset.train.y, source.spec, "train", seed))
    ctx = ExportContext(source.model, source.labels, source.spec, calibration=calib, training_images=train_split,
                        onnx_source=source.model if source.kind == "onnx" else None,
                        onnx_sha256=source.model_sha256 if source.kind == "onnx" else "",
                        seed=seed, batch_size=source.batch_size, qat_epochs=cfg.qat_epochs, qat_lr=cfg.qat_lr,
                        select_tf_ops=cfg.select_tf_ops, search_images=search)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{out_dir.name}-staging-"
    for dead in clear_dead_staging(out_dir.parent, prefix):
        console.print(f"removed {dead.name}: a convert that was killed left it", highlight=False)
    staging = make_staging(out_dir.parent, prefix)
    try:
        # The runtime reads labels and preprocessing beside the artifact, so validation sees the real layout.
        write_text(staging / LABELS_FILE, "\n".join(source.labels) + "\n")
        write_json(staging / PREPROCESS_FILE, source.spec.to_dict())
        console.print(f"converting {source.path} → {out_dir}  ({len(formats)} format(s); calibration "
                      f"{len(calib) if calib else 0} train images, validation {len(val)} {val.split} images)",
                      highlight=False, soft_wrap=True)
        if source.saved_by and source.saved_by.startswith(("Keras 3", "ONNX")):
            console.print(f"  source: {source.saved_by}" + ("; reference: the source model in ONNX Runtime"
                                                           if source.kind == "onnx" else ""), highlight=False)
        exported = export_all(formats, ctx, staging, on_start=lambda f: console.print(f"  exporting {f.name} …", highlight=False),
                              on_done=_report_export)
        console.print(f"  validating {sum(e.ok for e in exported)} artifact(s) with edgekit_runtime …", highlight=False)
        report = validate([(e.fmt, e.path) for e in exported if e.ok], ref, cfg.threads)
        entries = [mf.artifact_entry(e, report.results.get(e.fmt.name)) for e in exported]
        settings = {"formats": [f.name for f in formats], "calib_samples": cfg.calib_samples,
                    "val_samples": cfg.val_samples, "io": cfg.io, "opset": cfg.opset, "seed": seed,
                    "qat_epochs": cfg.qat_epochs, "qat_lr": cfg.qat_lr, "select_tf_ops": cfg.select_tf_ops}
        manifest = mf.build(source.describe(), calib.describe() if calib else None,
                            {**val.describe(), "keras_accuracy": ref.accuracy}, entries, settings)
        manifest = _publish(staging, out_dir, exported, manifest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return ConvertReport(out_dir, manifest, exported, report)


def _with_explained(cfg: ConvertConfig):
    """The formats asked for, with --explain's format added (alone when --formats is not given)."""
    if not cfg.explain:
        return cfg.formats
    name = cfg.explain.strip().lower()
    diagnosed = [n for n, f in FORMATS.items() if f.options.get("diagnose")]
    if name not in diagnosed:
        hint = suggest(name) if name not in FORMATS else ""
        raise EdgeError(f"--explain takes a format whose per-layer errors are measured ({', '.join(diagnosed)}), "
                        f"not {cfg.explain!r}.{hint}")
    if cfg.formats is None:
        return [name]
    names = cfg.formats.split(",") if isinstance(cfg.formats, str) else list(cfg.formats)
    return names + [name]


def _report_export(e: Exported) -> None:
    if not e.ok:
        console.print(f"  [red]❌ {e.fmt.name}[/]: {e.error}", highlight=False, soft_wrap=True)


def _warn_if_not_probabilities(probs) -> None:
    import numpy as np
    if probs.size and (probs.min() < -1e-4 or not np.allclose(probs.sum(1), 1.0, atol=1e-3)):
        console.print("[yellow]note:[/] the model's outputs do not sum to 1: they look like logits, not probabilities "
                      "(parity is still compared on them; add a softmax for calibrated confidences).")


def _publish(staging: Path, out_dir: Path, exported: List[Exported], manifest: dict) -> dict:
    """Move finished files into out_dir and write manifest.json last, with Ctrl-C held back meanwhile."""
    previous = None
    manifest_path = out_dir / "manifest.json"
    if manifest_path.is_file():
        try:
            previous = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            previous = None  # an unreadable old manifest is replaced, not merged
    with interrupts_deferred():
        out_dir.mkdir(parents=True, exist_ok=True)
        stale = _stale_files(previous, manifest, out_dir)
        for e in exported:
            target = out_dir / e.fmt.file_name
            if e.ok:
                os.replace(e.path, target)
            else:
                target.unlink(missing_ok=True)  # an older artifact of a format that now fails would mislead
        for name in (LABELS_FILE, PREPROCESS_FILE):
            os.replace(staging / name, out_dir / name)
        for path in stale:
            path.unlink(missing_ok=True)
        merged = mf.merge(previous, manifest, out_dir)
        write_json(manifest_path, merged)
    return merged


def _stale_files(previous: Optional[dict], current: dict, out_dir: Path) -> List[Path]:
    """Artifacts listed by an earlier manifest for a different model.keras: they no longer match the labels."""
    if not previous or previous.get("source", {}).get("model_sha256") == current["source"]["model_sha256"]:
        return []
    names = {e.get("file") for e in previous.get("artifacts", []) if isinstance(e, dict) and e.get("file")}
    names -= {e["file"] for e in current["artifacts"] if e.get("file")}
    return [out_dir / n for n in names if n and "/" not in n and (out_dir / n).is_file()]
