"""The `edge` command: thin typer wrappers that build a config object and call the library."""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import List, Optional, Tuple

import typer
from typer.core import TyperCommand

from edgekit import STARTED
from edgekit_runtime.exits import Exit
from edgekit.errors import EdgeError
from edgekit.layout import REPORT_JSON, RunLayout
from edgekit.progress import console
from edgekit.benchmarks.config import BenchConfig
from edgekit.benchmarks.select import Budget
from edgekit.convert.config import ConvertConfig
from edgekit.deploy.config import PackConfig
from edgekit.train.config import TrainConfig
from edgekit.train.presets import PRESETS
from edgekit.resources import config_file, shipped_configs, summary as first_line
from edgekit.benchmarks.config import parse_ints
from edgekit.train.summary import COLUMNS, find_runs, markdown as to_markdown, summarize

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, no_args_is_help=True, rich_markup_mode="rich",
                  help="Train, convert, run and benchmark image classifiers for small CPUs (Raspberry Pi and the like).")

DEFAULTS = TrainConfig()


def _default(config_cls, name: str):
    """An option's default as its config dataclass declares it: the one place a default lives, so the CLI, the
    Python API and the config files cannot drift apart (tests/test_cli.py holds every command to that)."""
    f = {f.name: f for f in dataclasses.fields(config_cls)}[name]
    return f.default if f.default is not dataclasses.MISSING else f.default_factory()


@app.callback()
def _global_options(verbose: bool = typer.Option(False, "--verbose", help="Show TensorFlow's own log lines and warnings "
                                                 "(hidden by default; EDGE_DEBUG=1 shows them too, with tracebacks).")):
    from edgekit import hardware, quiet
    quiet.install(verbose)
    bad = hardware.bad_emulation()
    if bad:
        _fail(EdgeError(bad))


def dflt(key: str) -> str:
    """Help text shows the built-in default read from TrainConfig, so it can't drift from the code."""
    return f"Default: {getattr(DEFAULTS, key)}."


def _esc(x) -> str:
    """Text from paths and reports printed inside Rich markup: a `[/x]` in it is shown, not parsed."""
    from rich.markup import escape
    return escape(str(x))


def _stdout():
    """Results go to stdout (so that $(edge ...) and pipes get them); progress and diagnostics to stderr."""
    from rich.console import Console
    return Console(width=None if sys.stdout.isatty() else 140)


def _working():
    """While a command works, anything printed goes to stderr (Keras' epoch lines, libraries' prints), so that
    stdout holds the command's result alone."""
    import contextlib
    return contextlib.redirect_stdout(sys.stderr)


def _fail(exc: EdgeError) -> None:
    from rich.markup import escape
    console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
    raise typer.Exit(exc.exit_code)


@app.command()
def train(
    config: Optional[str] = typer.Option(None, "--config", "-c", metavar="NAME|PATH", help="A shipped recipe by name (`edge configs` lists them: resnet8, demo, mobilenet_v2_finetune, …) or a YAML file; CLI options override its keys."),
    data: Optional[str] = typer.Option(None, help="'cifar10' ($EDGE_CIFAR10 or Keras download), a folder with train/<class>/ and optionally test/<class>/, or a .tar/.tar.gz of one. " + dflt("data")),
    out: Optional[Path] = typer.Option(None, help="Run directory to write. Default: runs/<preset>-<timestamp>."),
    preset: Optional[str] = typer.Option(None, help=f"Model preset: {', '.join(PRESETS)} (see `edge presets`). " + dflt("preset")),
    weights: Optional[str] = typer.Option(None, help="imagenet, none, or PATH to a weights file. Default: the preset's (imagenet; none for resnet8)."),
    hub: Optional[str] = typer.Option(None, help="TF Hub image feature-vector handle or local SavedModel dir, used as the backbone."),
    input_size: Optional[int] = typer.Option(None, help="Square input size in pixels. Default: the preset's (160 MobileNetV2, 224 V3/ResNet50/Hub, 32 resnet8)."),
    epochs: Optional[int] = typer.Option(None, help="Epochs of phase 1 (head-only, or the whole net for resnet8). " + dflt("epochs")),
    fine_tune_epochs: Optional[int] = typer.Option(None, help="Epochs of phase 2, fine-tuning the top `fine_tune_layers` backbone layers (0 = off). " + dflt("fine_tune_epochs")),
    batch_size: Optional[int] = typer.Option(None, help="Batch size. " + dflt("batch_size")),
    lr: Optional[float] = typer.Option(None, help="Phase-1 learning rate. " + dflt("lr")),
    optimizer: Optional[str] = typer.Option(None, help="adam or sgd (Nesterov momentum `momentum`). " + dflt("optimizer")),
    limit_per_class: Optional[int] = typer.Option(None, help="Use at most N training images per class (quick runs). Default: all."),
    seed: Optional[int] = typer.Option(None, help="Random seed for split, shuffling, augmentation and init. " + dflt("seed")),
    skip_bad: Optional[bool] = typer.Option(None, "--skip-bad", help="Go on without unreadable images (they are listed) instead of stopping.", show_default=False),
    no_feature_cache: Optional[bool] = typer.Option(None, "--no-feature-cache", help="Train the head on images instead of cached backbone features.", show_default=False),
    time_budget: Optional[float] = typer.Option(None, "--time-budget", metavar="MINUTES", help="Whole-run wall-clock budget: times a few steps, then chooses the epochs (and fits the schedule) so that data, caches, training, evaluation and writing end within it (in rounds of part of an epoch where fewer than six epochs fit; activation caches with fewer views where they would leave too little time). Overrides --epochs. 0 = off."),
    fine_tune_from: Optional[str] = typer.Option(None, "--fine-tune-from", metavar="LAYER", help="Backbone presets: cut after LAYER (a block boundary such as block_9_add), cache the frozen bottom's activations for `cache_views` augmented views, and train everything above the cut."),
    teacher: Optional[str] = typer.Option(None, metavar="RUN_DIR", help="Distil from a finished run (from-scratch presets): its probabilities on each training image and its mirror image, blended into the labels by `distill_weight`."),
    augment: Optional[str] = typer.Option(None, help="Augmentation policy: fast (flip + 4-px reflect-pad crop, on uint8 batches), seed (flip, rotate ±15°, shift, zoom; about half the speed), none, or ops 'flip,crop:4,cutout:8' (altflip: each image mirrored in every other epoch). " + dflt("augment")),
    strategy: Optional[str] = typer.Option(None, help="one (plain), mirrored (tf.distribute over the local GPUs, or the CPU), multiworker (MultiWorkerMirroredStrategy from $TF_CONFIG; the chief writes --out) or auto (multiworker when TF_CONFIG names several tasks, mirrored with 2+ GPUs, else one). " + dflt("strategy")),
    set_: List[str] = typer.Option([], "--set", help="Override any config key: --set label_smoothing=0.05 (repeatable)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the interrupted run in --out from its last finished epoch (multiworker: on every worker)."),
):
    """Train a model and write a run directory (model, labels.txt, preprocess.json, metrics, plots)."""
    from edgekit.train.config import build_config, parse_set
    try:
        overrides = parse_set(set_)
        named = dict(data=data, preset=preset, weights=weights, hub=hub, input_size=input_size, epochs=epochs,
                     fine_tune_epochs=fine_tune_epochs, batch_size=batch_size, lr=lr, optimizer=optimizer,
                     limit_per_class=limit_per_class, seed=seed, skip_bad=skip_bad,
                     feature_cache=False if no_feature_cache else None, time_budget=time_budget,
                     fine_tune_from=fine_tune_from, augment=augment, teacher=teacher, strategy=strategy)
        # an option not given must not erase the same key given with --set (--set batch_size=64 was lost)
        overrides.update({k: v for k, v in named.items() if v is not None})
        given = sorted(k for k, v in overrides.items() if v is not None)
        if resume and (given or config):
            console.print(f"note: --resume continues with the run's saved config.yaml; ignoring {', '.join(given) or '--config'}.")
        cfg = build_config(None if resume or config is None else config_file(config), {} if resume else overrides)
        from edgekit.train.run import train as run_train
        with _working():
            path = run_train(cfg, out, resume=resume, started=STARTED)
    except EdgeError as exc:
        _fail(exc)
    if path is None:
        console.print("this worker is done; the chief wrote the run directory.")
        return
    _print_summary(path)
    typer.echo(path)   # the result on stdout, the story above on stderr: RUN=$(edge train ...)


@app.command()
def evaluate(
    run_dir: Path = typer.Argument(..., help="A run directory written by `edge train`."),
    data: Optional[str] = typer.Option(None, help="Data to evaluate on (same forms as `edge train --data`). Default: the run's own test split."),
    tta: str = typer.Option("none", help="flip: score the model with flip averaging wrapped around it (what `tta: flip` would save), under tta_flip in metrics.json."),
):
    """Recompute test metrics of a trained run (updates RUN_DIR/metrics.json)."""
    try:
        from edgekit.train.evaluate import evaluate as run_evaluate
        with _working():
            report = run_evaluate(run_dir, data, tta=tta)
    except EdgeError as exc:
        _fail(exc)
    _stdout().print(f"test top-1 [bold]{report['top1']:.2%}[/] on {report['images']:,} images, macro F1 {report['macro_f1']:.3f}")


class _PerChannelNumbers(TyperCommand):
    """Lets --scale / --offset / --mean / --std take one or three numbers, as written in the README: --scale 0.0171 0.0175 0.0174.

    Click options have a fixed number of values, so the numbers after those options are joined with
    commas before parsing (the option also accepts 'S,S,S' or being repeated).
    """

    joined = ("--scale", "--offset", "--mean", "--std")

    def parse_args(self, ctx, args):
        out, i = [], 0
        while i < len(args):
            if args[i] in self.joined:
                values = []
                while i + 1 + len(values) < len(args) and len(values) < 3 and _is_number(args[i + 1 + len(values)]):
                    values.append(args[i + 1 + len(values)])
                if values:
                    out.append(f"{args[i]}={','.join(values)}")
                    i += 1 + len(values)
                    continue
            out.append(args[i])
            i += 1
        return super().parse_args(ctx, out)


def _is_number(token: str) -> bool:
    try:
        float(token)
        return True
    except ValueError:
        return False


@app.command(cls=_PerChannelNumbers)
def convert(
    source: Path = typer.Argument(..., help="A run directory written by `edge train`, or a .keras/.h5 file (tf_keras or "
                                            "Keras 3), SavedModel directory or .onnx file of another model (then also "
                                            "--labels, --scale/--offset or --mean/--std, --data)."),
    formats: Optional[str] = typer.Option(None, "--formats", "-f", help="Comma-separated formats, 'default' or 'all' "
                                          "(see the formats table in the README). Default: every format but tflite-qat, tflite-int8-stock and the two -mixed ones."),
    calib_samples: int = typer.Option(_default(ConvertConfig, "calib_samples"), help="Training images (seeded, class-balanced) that calibrate the quantized formats."),
    val_samples: int = typer.Option(_default(ConvertConfig, "val_samples"), help="Held-out images (test split, then val) each artifact is validated on."),
    io: str = typer.Option(_default(ConvertConfig, "io"), help="Input/output type of tflite-int8 and tflite-qat: uint8 or int8."),
    opset: int = typer.Option(_default(ConvertConfig, "opset"), help="ONNX opset of the onnx-* formats."),
    data: Optional[str] = typer.Option(None, help="Images for calibration and validation (same forms as `edge train --data`). "
                                                  "Default: the run's own data; required for other models."),
    out: Optional[Path] = typer.Option(None, help="Output directory. Default: RUN_DIR/export, or <model>-export beside the model."),
    input_size: Optional[Tuple[int, int]] = typer.Option(None, "--input-size", metavar="H W", show_default=False,
                                                         help="Other models: input height and width (if the model leaves them open)."),
    scale: List[str] = typer.Option([], "--scale", metavar="S [S S]", help="Other models: model_input = pixel_0_to_255 * scale + offset; "
                                    "one value for all channels, or three (R G B)."),
    offset: List[str] = typer.Option([], "--offset", metavar="O [O O]", help="Other models: the offset of that formula, one value or three."),
    mean: List[str] = typer.Option([], "--mean", metavar="M [M M]", help="Other models, instead of --scale/--offset: PyTorch-style (pixel/255 - mean) / std; e.g. --mean 0.485 0.456 0.406."),
    std: List[str] = typer.Option([], "--std", metavar="S [S S]", help="Other models: the std of that formula, e.g. --std 0.229 0.224 0.225."),
    labels: Optional[Path] = typer.Option(None, help="Other models: labels file, one class name per line in output order."),
    channel_order: str = typer.Option(_default(ConvertConfig, "channel_order"), help="Other models: RGB, or BGR for caffe-style models."),
    qat_epochs: int = typer.Option(_default(ConvertConfig, "qat_epochs"), help="Epochs of quantization-aware training (tflite-qat), distilled from the model's own outputs on the training split."),
    select_tf_ops: bool = typer.Option(_default(ConvertConfig, "select_tf_ops"), "--select-tf-ops", help="Let TFLite use TensorFlow kernels (SELECT_TF_OPS) "
                                       "for ops it has no builtin for; the device then needs the Flex delegate."),
    seed: Optional[int] = typer.Option(None, help="Seed of the calibration/validation samples and QAT. Default: the run's."),
    skip_bad: bool = typer.Option(_default(ConvertConfig, "skip_bad"), "--skip-bad", help="Go on without unreadable images in --data (they are counted) instead of stopping."),
    min_agreement: Optional[float] = typer.Option(None, help="Target top-1 agreement of tflite-int8-mixed and onnx-int8-mixed "
                                                  "(and their tolerance), e.g. 0.995; layers are kept in float (the worst one by one, or a prefix in model order, whichever is faster) until the search images clear it by their sampling error."),
    keep_float: List[str] = typer.Option([], "--keep-float", metavar="LAYER", help="Keep these layers in float in "
                                         "tflite-int8-mixed/onnx-int8-mixed instead of searching (repeat, or comma list): "
                                         "a layer's name as --explain and the manifest give it, or its Keras layer name."),
    max_slowdown: Optional[float] = typer.Option(None, metavar="X", help="Latency budget of the mixed formats' search: "
                                                 "no step slower than X times the int8 artifact (timed as the search "
                                                 "times, 1 thread), e.g. 1.25; the target is then met within it or the "
                                                 "most agreeing step within it is kept (❎)."),
    explain: Optional[str] = typer.Option(None, help="Print the error int8 adds at each layer of this format "
                                          "(tflite-int8 or tflite-int8-mixed), worst first; converts just it unless --formats is given."),
):
    """Export TFLite and ONNX artifacts and validate each against the source model (writes RUN_DIR/export/).

    Exit code: 0 when every artifact exported and validated (✅); 3 when any is outside tolerance (❎) or failed to export (❌); 2 for bad input, with nothing written."""
    try:
        from edgekit.convert import manifest
        from edgekit.convert.run import convert as run_convert, parse_numbers
        cfg = ConvertConfig(source, formats=formats, calib_samples=calib_samples, val_samples=val_samples, io=io,
                            opset=opset, data=data, out=out, input_size=input_size,
                            scale=parse_numbers(scale, "--scale"), offset=parse_numbers(offset, "--offset"),
                            mean=parse_numbers(mean, "--mean"), std=parse_numbers(std, "--std"),
                            labels=labels, channel_order=channel_order.upper(), qat_epochs=qat_epochs,
                            select_tf_ops=select_tf_ops, seed=seed, skip_bad=skip_bad, min_agreement=min_agreement,
                            keep_float=keep_float, max_slowdown=max_slowdown, explain=explain)
        with _working():
            report = run_convert(cfg)
    except EdgeError as exc:
        _fail(exc)
    console.print(manifest.table(report.entries, title=f"{report.out_dir}"))
    for line in manifest.worst_layers(report.entries):
        console.print(f"[yellow]❎[/] {_esc(line)}", highlight=False, soft_wrap=True)
    for entry in report.entries:
        if explain and entry["format"] == explain.strip().lower():
            console.print(manifest.layer_table(entry) if entry.get("layer_errors") else
                          f"{entry['format']}: no per-layer errors were measured ({_esc(entry.get('error') or 'see its notes')}).")
    passed = sum(e["status"] == manifest.PASSED for e in report.entries)
    colour = "green" if report.all_passed else "red"
    console.print(f"[bold {colour}]{passed}/{len(report.entries)} validated[/] · manifest: {_esc(report.out_dir / 'manifest.json')}",
                  highlight=False, soft_wrap=True)
    typer.echo(report.out_dir)   # the export directory on stdout
    raise typer.Exit(report.exit_code)


@app.command()
def bench(
    run_dir: Path = typer.Argument(..., help="A run directory whose export/ was written by `edge convert`."),
    formats: Optional[str] = typer.Option(None, help="Comma list of formats to measure. Default: every artifact in export/manifest.json."),
    samples: Optional[int] = typer.Option(None, help="Test images for accuracy (class-balanced sample). Default: the whole test split."),
    threads: Optional[str] = typer.Option(None, help="Thread counts to sweep, e.g. 1,2,4. Default: all cores this process may use."),
    batch: str = typer.Option(",".join(map(str, _default(BenchConfig, "batch"))), help="Batch sizes to time, e.g. 1,8 (throughput in images/s)."),
    runs: int = typer.Option(_default(BenchConfig, "runs"), help="Timed runs per setting (at least)."),
    warmup: int = typer.Option(_default(BenchConfig, "warmup"), help="Untimed warm-up runs per setting."),
    min_time: float = typer.Option(_default(BenchConfig, "min_time"), help="Keep timing each setting for at least this many seconds."),
    max_time: float = typer.Option(_default(BenchConfig, "max_time"), help="Stop timing a slow setting after this many seconds (once it has 3 runs)."),
    data: Optional[str] = typer.Option(None, help="Data whose test split to use (same forms as `edge train --data`). Default: the run's own."),
    out: Optional[Path] = typer.Option(None, help="Report directory. Default: RUN_DIR/bench."),
    host: Optional[List[str]] = typer.Option(None, help="Also run on a device over SSH: user@host[:port] (known_hosts is checked). Repeat for several devices, measured at the same time."),
    hosts: Optional[Path] = typer.Option(None, help="A file of devices, one `user@host[:port] [name]` per line (# comments)."),
    parallel: int = typer.Option(_default(BenchConfig, "parallel"), help="Devices measured at the same time."),
    port: Optional[int] = typer.Option(None, help="SSH port of the --host devices that name none. Default: 22 or your ssh config's."),
    identity: Optional[Path] = typer.Option(None, help="SSH private key for --host."),
    known_hosts: Optional[Path] = typer.Option(None, help="known_hosts file to verify --host against. Default: ~/.ssh/known_hosts."),
    accept_new_host_key: bool = typer.Option(_default(BenchConfig, "accept_new_host_key"), "--accept-new-host-key", help="Trust and record a host key seen for the first time (never a changed one)."),
    device_samples: int = typer.Option(_default(BenchConfig, "device_samples"), help="Test images copied to the device for its accuracy figures."),
    device_python: Optional[str] = typer.Option(None, help="Python on the device that already has numpy, Pillow and the engine (skips the venv install)."),
    local: bool = typer.Option(_default(BenchConfig, "local"), "--local/--no-local", help="With --host, also measure on this machine."),
    python: Optional[str] = typer.Option(None, help="Python that runs the local measurements, e.g. a venv holding only `pip install ./runtime[litert]`. Default: this one."),
    keep: bool = typer.Option(_default(BenchConfig, "keep"), "--keep", help="Keep the plan directory here and the copy on the device."),
    baseline: Optional[Path] = typer.Option(None, help="An earlier report.json: exit 4 if accuracy or latency regressed."),
    max_accuracy_drop: float = typer.Option(_default(BenchConfig, "max_accuracy_drop"), help="With --baseline: allowed top-1 drop in percentage points."),
    max_latency_growth: float = typer.Option(_default(BenchConfig, "max_latency_growth"), help="With --baseline: allowed p50 latency growth in percent."),
):
    """Measure accuracy, latency, memory and cost of every exported artifact; write report.json/.md/.html.

    Exit codes: 0 every row ✅, 3 some row ❎/❌, 4 regression against --baseline, 2 bad input or an unusable --host
    (local results are still written).
    """
    try:
        cfg = BenchConfig(run_dir=run_dir, formats=formats, samples=samples, threads=parse_ints(threads, "--threads"),
                          batch=parse_ints(batch, "--batch") or (1,), runs=runs, warmup=warmup, min_time=min_time,
                          max_time=max_time, data=data, out=out, hosts=tuple(host or ()), hosts_file=hosts,
                          parallel=parallel, port=port, identity=identity,
                          known_hosts=known_hosts, accept_new_host_key=accept_new_host_key, device_samples=device_samples,
                          device_python=device_python, local=local, python=python, keep=keep, baseline=baseline,
                          max_accuracy_drop=max_accuracy_drop, max_latency_growth=max_latency_growth)
        cfg.check()
        from edgekit.benchmarks.report.table import console_table
        from edgekit.benchmarks.run import bench as run_bench
        with _working():
            result = run_bench(cfg)
    except EdgeError as exc:
        _fail(exc)
    console.print(console_table(result.report, title=str(result.out_dir)))
    for error in result.errors:
        from rich.markup import escape
        console.print(f"[bold red]error:[/] {escape(error)}", highlight=False, soft_wrap=True)
    cmp = result.report.get("comparison")
    if cmp:
        bad = [c for c in cmp["checks"] if not c["ok"]]
        console.print(f"baseline {_esc(cmp['baseline'])}: " + ("[green]no regression[/]" if not bad else "[bold red]regression:[/] "
                      + _esc("; ".join(f"{c['name']} {c['metric']} {c['change']} (limit {c['limit']})" for c in bad))),
                      highlight=False, soft_wrap=True)
    console.print(f"reports: {result.out_dir / 'report.md'} · {result.out_dir / 'report.html'} · "
                  f"{result.out_dir / 'report.json'}", highlight=False, soft_wrap=True, markup=False)
    typer.echo(result.out_dir / REPORT_JSON)   # the report on stdout
    raise typer.Exit(result.exit_code)


@app.command()
def select(
    sources: List[Path] = typer.Argument(..., help="Run directories (their bench/report.json) or report.json files; several are merged."),
    device: Optional[str] = typer.Option(None, help="Device id as in the reports (local, or the --host name). Default: the only one."),
    max_accuracy_drop: float = typer.Option(_default(Budget, "max_accuracy_drop_pp"), help="Allowed top-1 drop below the report's reference (Keras) row, in percentage points."),
    min_accuracy: Optional[float] = typer.Option(None, help="Smallest top-1 in percent, whatever each artifact's reference (compares runs)."),
    max_size: Optional[float] = typer.Option(None, help="Largest model file, in MB."),
    max_ram: Optional[float] = typer.Option(None, help="Largest peak resident memory of the benchmark process, in MB."),
    metric: str = typer.Option(_default(Budget, "metric"), help="Rank by p50 or p99 (one inference), e2e (image file to label) or cold (fresh process to first answer)."),
    json_: bool = typer.Option(False, "--json", help="Print the selection as JSON instead of a table."),
):
    """Pick the artifact to deploy from bench reports: the fastest one that passed and fits the budget.

    Every other artifact gets one line saying why it lost; the table goes to stderr and the chosen format's name alone
    to stdout (`edge pack RUN --format $(edge select RUN)`). Exit codes: 0 one fits, 5 none fits, 2 bad input.
    """
    from edgekit.benchmarks import select as sel
    try:
        budget = Budget(max_accuracy_drop_pp=max_accuracy_drop, max_size_mb=max_size, max_ram_mb=max_ram, metric=metric,
                        min_accuracy_pct=min_accuracy)
        result = sel.select(sources, budget, device)
    except EdgeError as exc:
        _fail(exc)
    if json_:
        typer.echo(sel.dumps(result))
    else:
        console.print(sel.console_table(result))
    if result.best is None:
        if not json_:
            console.print("[bold red]nothing fits the budget[/]: loosen --max-accuracy-drop/--max-size/--max-ram, "
                          "or convert with other formats.", highlight=False)
        raise typer.Exit(Exit.NONE_FITS)
    if not json_:
        from rich.markup import escape
        console.print(f"recommended: [bold]{escape(result.best.artifact)}[/] ({escape(str(result.best.file))})",
                      highlight=False)
        typer.echo(result.best.artifact)   # the table is on stderr; stdout holds the pick alone: $(edge select RUN)


@app.command()
def pack(
    run_dir: Path = typer.Argument(..., help="A converted (and, for --format best, benchmarked) run directory, or the export directory of a model brought to edge convert."),
    format: str = typer.Option(_default(PackConfig, "format"), "--format", help="An exported format name, or best: what `edge select` recommends from the run's bench report."),
    target: str = typer.Option(_default(PackConfig, "target"), help="The device's CPU: aarch64 (64-bit Raspberry Pi OS), armv7l (32-bit) or x86_64."),
    os: str = typer.Option(_default(PackConfig, "os"), "--os", help="The device's Raspberry Pi OS / Debian release: bookworm (Python 3.11, glibc 2.36) or trixie (Python 3.13, glibc 2.41)."),
    python: Optional[str] = typer.Option(_default(PackConfig, "python"), help="The device's Python version. Default: the --os release's (bookworm 3.11, trixie 3.13)."),
    engine: Optional[str] = typer.Option(None, help="litert, tflite or onnx. Default: litert for .tflite, onnx for .onnx."),
    out: Optional[Path] = typer.Option(None, help="Bundle file. Default: RUN_DIR/pack/<run>-<format>-<target>-py<python>.tar.gz."),
    force: bool = typer.Option(_default(PackConfig, "force"), "--force", help="Replace an existing bundle file."),
    wheels: Optional[Path] = typer.Option(None, help="Take the wheels from this folder instead of PyPI (offline packing)."),
    device: Optional[str] = typer.Option(None, help="With --format best: the bench device to choose for."),
    samples: int = typer.Option(_default(PackConfig, "samples"), help="Test images bundled for the smoke test."),
    data: Optional[str] = typer.Option(None, help="Images to draw the samples from. Default: the run's test split, or the data the export was converted with."),
    check: bool = typer.Option(False, "--check", help="Then install it in the emulated Raspberry Pi OS userland and run its smoke test (aarch64; root, qemu-user-static, debootstrap: see make pi-check)."),
    sign: Optional[Path] = typer.Option(None, "--sign", metavar="KEY", help="Sign pack.json with this SSH private key (ssh-keygen -Y sign); devices check it with install.sh --trust ALLOWED_SIGNERS."),
    signer: Optional[str] = typer.Option(None, "--signer", metavar="NAME", help="With --sign: the name devices list the key under in allowed_signers. Default: the key's comment."),
):
    """Bundle an artifact for a device: model + labels + preprocessing, the runtime and engine wheels for that
    platform, install.sh (offline pip install) and a smoke test, with every file's sha256."""
    from edgekit.deploy.pack import pack as run_pack
    try:
        with _working():
            done = run_pack(PackConfig(run_dir=run_dir, format=format, target=target, os=os, python=python,
                                       engine=engine, out=out, force=force, wheels=wheels, device=device,
                                       samples=samples, data=data, sign=sign, signer=signer))
    except EdgeError as exc:
        _fail(exc)
    console.print(f"[bold green]packed[/] {_esc(done.path)} ({done.size_bytes / 1e6:.1f} MB, {done.seconds:.0f} s): "
                  f"{_esc(done.artifact)} ({_esc(done.why)}), engine {done.engine}, {len(done.wheels)} wheels, "
                  f"{done.samples} sample images", highlight=False, soft_wrap=True)
    console.print(f"on the device: tar xzf {done.path.name} && {done.folder}/install.sh"
                  + (" --trust ALLOWED_SIGNERS" if done.signer else ""), highlight=False, soft_wrap=True, markup=False)
    if done.signer:
        line = done.trust_line or f'{done.signer} namespaces="edgekit-bundle" <its public key>'
        console.print(f"signed by {done.signer}; ALLOWED_SIGNERS on the device holds the line: {line}",
                      highlight=False, soft_wrap=True, markup=False)
    typer.echo(done.path)   # the bundle on stdout
    if check:
        from edgekit.deploy.pi.check import main as check_main
        raise typer.Exit(check_main(["--bundle", str(done.path)]))


@app.command("pi-check", add_help_option=False,
             context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def pi_check(ctx: typer.Context):
    """Run an export's artifacts in an emulated Raspberry Pi OS userland and compare with this machine (root,
    debootstrap, qemu-user-static): `edge pi-check --export DIR --images 200 --out DIR`; --help for all options."""
    from edgekit.deploy.pi.check import main as check_main
    raise typer.Exit(check_main(list(ctx.args)))


@app.command()
def predict(
    model: Path = typer.Argument(..., help="A .tflite or .onnx file, or an export directory (model files + labels.txt + preprocess.json)."),
    images: List[Path] = typer.Argument(..., help="Image files (JPEG, PNG, BMP, WebP, TIFF, ...)."),
    top_k: int = typer.Option(3, help="Classes shown per image."),
    format: Optional[str] = typer.Option(None, "--format", help="Which model of an export directory holding several (manifest name, file name or suffix such as int8)."),
    engine: Optional[str] = typer.Option(None, help="litert, tflite or onnx. Default: the first installed that runs the file."),
    threads: Optional[int] = typer.Option(None, help="CPU threads. Default: all available."),
    batch_size: int = typer.Option(32, help="Images decoded and run together."),
    json_: bool = typer.Option(False, "--json", help="Print JSON instead of text."),
    max_memory: Optional[float] = typer.Option(None, "--max-memory", metavar="MB", help="Keep this process under MB: large images decode within what the loaded model leaves. Default: 256 MB per image's decode."),
    verify: bool = typer.Option(True, "--verify/--no-verify", help="Check the model's sha256 against the export's manifest.json (--no-verify: a model edited by hand)."),
):
    """Classify images with an exported artifact, through the device runtime (the same code as `edge-run predict`)."""
    from edgekit_runtime.cli import main as run_main
    argv = ["predict", str(model), *map(str, images), "--top-k", str(top_k), "--batch-size", str(batch_size)]
    for flag, value in (("--format", format), ("--engine", engine), ("--threads", threads), ("--max-memory", max_memory)):
        if value is not None:
            argv += [flag, str(value)]
    raise typer.Exit(run_main(argv + (["--json"] if json_ else []) + ([] if verify else ["--no-verify"])))


@app.command()
def presets():
    """List the model presets with their default input size, weights and normalisation."""
    from rich.table import Table
    table = Table()
    table.add_column("preset", no_wrap=True)
    for name in ("size", "weights", "order", "scale / offset", "what"):
        table.add_column(name)
    for p in PRESETS.values():
        table.add_row(p.name, str(p.default_size), p.default_weights, p.channel_order,
                      f"{p.normalization[0][0]:.4g} / {p.normalization[1][0]:.4g}", p.summary)
    _stdout().print(table)


@app.command()
def configs():
    """List the recipes that ship with edgekit (train one with `edge train -c NAME`)."""
    from rich.table import Table
    table = Table()
    table.add_column("name", no_wrap=True)
    table.add_column("what")
    for name, path in shipped_configs().items():
        table.add_row(name, first_line(path))
    _stdout().print(table)


@app.command()
def summary(
    runs: List[Path] = typer.Argument(None, help="Run directories, or folders holding them. Default: runs/."),
    markdown: bool = typer.Option(False, "--markdown", help="Print a Markdown table (for READMEs and reports)."),
):
    """One row per finished run: model, input size, phases, test top-1, training time, feature-cache use."""
    from rich.table import Table
    found = find_runs(runs or [Path("runs")])
    if not found:
        _fail(EdgeError(f"no finished runs (directories with metrics.json) in {', '.join(map(str, runs or ['runs']))}."))
    rows = [summarize(r) for r in found]
    if markdown:
        print(to_markdown(rows))
        return
    table = Table(*COLUMNS)
    for row in rows:
        table.add_row(*(row[c] for c in COLUMNS))
    _stdout().print(table)


def _print_summary(path: Path) -> None:
    import json
    m = json.loads(RunLayout(path).metrics.read_text())
    console.print(f"\n[bold green]done[/]: {path}\n  test top-1 [bold]{m['test']['top1']:.2%}[/] on {m['test']['images']:,} images"
                  f" · training {m['train_seconds']:.0f} s · {m['total_seconds']:.0f} s in all")


def main() -> None:
    import os
    try:
        app(standalone_mode=True)
    except KeyboardInterrupt:
        console.print("[bold red]interrupted[/]")
        raise SystemExit(Exit.INTERRUPTED)
    except Exception as exc:  # a bug, not bad input: one line, and the traceback on request
        if os.environ.get("EDGE_DEBUG"):
            raise
        from rich.markup import escape
        first = (str(exc).strip().splitlines() or [""])[0][:500]   # one line, whatever the exception holds
        console.print(f"[bold red]internal error:[/] {escape(type(exc).__name__)}: {escape(first)} "
                      "(set EDGE_DEBUG=1 for the traceback)", highlight=False, soft_wrap=True)
        raise SystemExit(Exit.INTERNAL)
