"""Training configuration: the one place defaults live, YAML loading and override validation."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import yaml

from edgekit.errors import EdgeError
from edgekit.helpers import did_you_mean


@dataclass
class TrainConfig:
    data: str = "cifar10"             # cifar10 | folder with train/<class>/ (and test/<class>/) | .tar/.tar.gz of it
    preset: str = "resnet8"           # see `edge presets`
    weights: Optional[str] = None     # imagenet | none | PATH to a weights file; None = the preset's default
    hub: Optional[str] = None         # TF Hub handle or local SavedModel dir; replaces the preset's backbone
    input_size: Optional[int] = None  # square input side in pixels; None = the preset's default
    alpha: float = 1.0                # width multiplier of MobileNet presets
    val_fraction: float = 0.1         # stratified share of train/ held out for validation
    test_fraction: float = 0.1        # used only when the data has no test/ folder
    limit_per_class: Optional[int] = None       # cap train images per class (quick runs)
    test_limit_per_class: Optional[int] = None  # cap test images per class (quick runs)
    skip_bad: bool = False            # drop unreadable images (listed) instead of stopping
    batch_size: int = 64
    epochs: int = 10                  # phase 1: head-only (transfer) or the whole net (from scratch)
    lr: float = 1e-3
    fine_tune_epochs: int = 0         # phase 2 (transfer only); 0 = no fine-tuning
    fine_tune_layers: int = 30        # top backbone layers unfrozen in phase 2 (0 = all)
    fine_tune_lr: float = 1e-4
    fine_tune_from: Optional[str] = None  # backbone layer to cut after: train everything above it on cached activations
    cache_views: int = 4              # K views per training image in the activation cache (original, flip, K-2 augmented)
    optimizer: str = "adam"           # adam | sgd (SGD with Nesterov momentum)
    momentum: float = 0.9
    lr_decay: float = 1.0             # exponential decay factor per epoch (1.0 = constant)
    lr_schedule: str = "exponential"  # exponential (lr * lr_decay**epoch) | cosine (to 0, after warm-up) | onecycle
    warmup_epochs: int = 0            # linear warm-up epochs of the cosine schedule
    warmup_fraction: float = 0.15     # one-cycle: share of the steps spent warming up from 0 to lr
    final_lr: float = 0.0             # one-cycle: the rate the linear anneal ends at
    ema: float = 0.0                  # momentum of the weight average that is validated and saved; 0 = off
    time_budget: float = 0.0          # minutes for the whole run; chooses the epochs (overrides `epochs`); 0 = off
    time_budget_reserve: float = 0.0  # seconds of time_budget kept for commands after training (the demo's convert, bench)
    teacher: Optional[str] = None     # a finished run whose probabilities are blended into the targets (distillation)
    distill_weight: float = 0.5       # share of the teacher's probabilities in each target (the rest: the label)
    distill_temperature: float = 1.0  # teacher probabilities softened as softmax(log p / T): T > 1 shows class likeness
    hard_examples: float = 0.0        # share of the easiest training images each epoch leaves out, rescored as it trains
    weight_decay: float = 0.0         # L2 penalty on conv/dense kernels (from-scratch models)
    label_smoothing: float = 0.1
    dropout: float = 0.2
    tta: str = "none"                 # flip: the saved model averages the image and its mirror image (2x inference)
    augment: Union[str, List[str]] = "fast"  # fast (flip, crop:4) | seed (flip, rotate, shift, zoom) | none | [ops]
    early_stopping_patience: int = 5  # epochs without val-loss improvement; 0 = off
    feature_cache: bool = True        # phase 1 of transfer presets trains on cached backbone features
    data_cache: bool = True           # reuse decoded images of unchanged files from an earlier run
    cache_dir: Optional[str] = None   # None = $EDGE_CACHE_DIR or ~/.cache/edgekit
    strategy: str = "auto"            # one | mirrored (local GPUs) | multiworker (TF_CONFIG) | auto (see distribute.choose)
    worker_timeout: float = 120.0     # multiworker: seconds to wait for every worker to join before giving up
    precision: str = "auto"           # auto (bfloat16 for from-scratch nets on CPUs with AMX) | float32 | bfloat16
    seed: int = 42

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


FIELD_NAMES = [f.name for f in fields(TrainConfig)]


SCHEDULES = ("exponential", "cosine", "onecycle")   # schedules.py builds them; checked here without TensorFlow
suggest = did_you_mean  # ' Did you mean …?' for config keys and values


def _coerce(key: str, value: Any) -> Any:
    """Type-check one value against the dataclass default's type (YAML and --set give strings too)."""
    default = TrainConfig.__dataclass_fields__[key].default
    if key == "augment":  # a policy name, a list of ops, or the older true/false
        from edgekit.train.augment import parse_policy
        parse_policy(value)
        return list(value) if isinstance(value, (list, tuple)) else value
    if value is None or (isinstance(value, str) and value.lower() in ("null", "~") and default is None):
        return None
    typ = type(default) if default is not None else (int if key.endswith(("size", "class")) else str)
    try:
        if typ is bool:
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("true", "yes", "1", "on"):
                return True
            if str(value).lower() in ("false", "no", "0", "off"):
                return False
            raise ValueError
        if typ is int and isinstance(value, float) and not value.is_integer():
            raise ValueError
        return typ(value)
    except (TypeError, ValueError):
        raise EdgeError(f"config key {key!r}: {value!r} is not a valid {typ.__name__}.") from None


def merge(base: Dict[str, Any], overrides: Dict[str, Any], where: str) -> Dict[str, Any]:
    out = dict(base)
    for key, value in overrides.items():
        if key not in FIELD_NAMES:
            raise EdgeError(f"unknown config key {key!r} in {where}.{suggest(key, FIELD_NAMES)}")
        out[key] = _coerce(key, value)
    return out


def load_yaml(path: Path) -> Dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh) or {}
    except FileNotFoundError:
        raise EdgeError(f"config file {path} does not exist.") from None
    except yaml.YAMLError as exc:
        raise EdgeError(f"config file {path} is not valid YAML ({str(exc).splitlines()[0]}).") from None
    if not isinstance(data, dict):
        raise EdgeError(f"config file {path} must be a mapping of keys to values.")
    return data


def parse_set(items) -> Dict[str, Any]:
    """`--set key=value` pairs; values are parsed as YAML scalars (so 1e-3, true, null work)."""
    out = {}
    for item in items or []:
        if "=" not in item:
            raise EdgeError(f"--set expects key=value, got {item!r}.")
        key, raw = item.split("=", 1)
        value = yaml.safe_load(raw) if raw else None
        if isinstance(value, str):
            try:  # YAML 1.1 reads "1e-3" as a string
                value = float(value)
            except ValueError:
                pass
        out[key.strip().replace("-", "_")] = value
    return out


def build_config(config_file: Optional[Path], overrides: Dict[str, Any]) -> TrainConfig:
    """Defaults ← YAML file ← CLI overrides (None means 'not given'), all keys validated."""
    values = TrainConfig().to_dict()
    if config_file is not None:
        values = merge(values, load_yaml(config_file), str(config_file))
    values = merge(values, {k: v for k, v in overrides.items() if v is not None}, "the command line")
    cfg = TrainConfig(**values)
    validate(cfg)
    return cfg


def validate(cfg: TrainConfig) -> None:
    if cfg.optimizer not in ("adam", "sgd"):
        raise EdgeError(f"optimizer must be 'adam' or 'sgd', not {cfg.optimizer!r}.{suggest(cfg.optimizer, ['adam', 'sgd'])}")
    if cfg.lr_schedule not in SCHEDULES:
        raise EdgeError(f"lr_schedule must be one of {', '.join(SCHEDULES)}, not {cfg.lr_schedule!r}."
                        f"{suggest(cfg.lr_schedule, SCHEDULES)}")
    from edgekit.train.distribute import STRATEGIES
    if cfg.strategy not in STRATEGIES:
        raise EdgeError(f"strategy must be one of {', '.join(STRATEGIES)}, not {cfg.strategy!r}."
                        f"{suggest(cfg.strategy, STRATEGIES)}")
    from edgekit.train.precision import PRECISIONS
    if cfg.precision not in PRECISIONS:
        raise EdgeError(f"precision must be one of {', '.join(PRECISIONS)}, not {cfg.precision!r}."
                        f"{suggest(cfg.precision, PRECISIONS)}")
    checks = [
        (cfg.worker_timeout > 0, "worker_timeout must be a positive number of seconds"),
        (0 < cfg.val_fraction < 0.9, "val_fraction must be between 0 and 0.9"),
        (0 < cfg.test_fraction < 0.9, "test_fraction must be between 0 and 0.9"),
        (cfg.batch_size >= 1, "batch_size must be at least 1"),
        (cfg.epochs >= 0 and cfg.fine_tune_epochs >= 0, "epochs must not be negative"),
        (cfg.lr > 0 and cfg.fine_tune_lr > 0, "learning rates must be positive"),
        (0 < cfg.lr_decay <= 1, "lr_decay must be in (0, 1]"),
        (0 <= cfg.label_smoothing < 1, "label_smoothing must be in [0, 1)"),
        (0 <= cfg.dropout < 1, "dropout must be in [0, 1)"),
        (cfg.input_size is None or 32 <= cfg.input_size <= 4096, "input_size must be from 32 to 4096 (the runtime reads no larger preprocess.json)"),
        (cfg.limit_per_class is None or cfg.limit_per_class >= 2, "limit_per_class must be at least 2"),
        (0 <= cfg.warmup_fraction < 1, "warmup_fraction must be in [0, 1)"),
        (0 <= cfg.final_lr <= cfg.lr, "final_lr must be between 0 and lr"),
        (cfg.ema == 0 or 0.5 <= cfg.ema < 1, "ema must be 0 (off) or a momentum in [0.5, 1), e.g. 0.99"),
        (cfg.time_budget >= 0, "time_budget must be 0 (off) or minutes"),
        (cfg.time_budget_reserve >= 0 and (not cfg.time_budget or cfg.time_budget_reserve < cfg.time_budget * 60),
         "time_budget_reserve must be seconds, fewer than time_budget holds"),
        (cfg.cache_views >= 1, "cache_views must be at least 1"),
        (0 <= cfg.hard_examples <= 0.5, "hard_examples must be 0 (off) or a share of the training images up to 0.5"),
        (0 < cfg.distill_weight <= 1, "distill_weight must be in (0, 1]"),
        (0 < cfg.distill_temperature <= 20, "distill_temperature must be in (0, 20]"),
        (cfg.tta in ("none", "flip"), f"tta must be none or flip, not {cfg.tta!r}"),
        (cfg.fine_tune_from is None or not cfg.hub, "fine_tune_from needs a keras.applications backbone, not --hub"),
    ]
    for ok, message in checks:
        if not ok:
            raise EdgeError(message + ".")
