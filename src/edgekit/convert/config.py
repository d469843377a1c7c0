"""ConvertConfig: every `edge convert` setting and its default, in one place (the CLI reads its defaults here)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Tuple, Union

from edgekit.convert.formats import DEFAULT_OPSET


@dataclass
class ConvertConfig:
    source: Path                                   # run directory, or .keras/.h5 file / SavedModel directory
    formats: Union[None, str, Sequence[str]] = None  # None = the default set; 'all' adds tflite-qat
    calib_samples: int = 500
    val_samples: int = 1000
    io: str = "uint8"                              # input/output type of tflite-int8 and tflite-qat
    opset: int = DEFAULT_OPSET
    data: Optional[str] = None                     # None: the run's own data (required for other models)
    out: Optional[Path] = None                     # None: RUN_DIR/export, or <model>-export beside the model
    # bring-your-own model
    input_size: Optional[Tuple[int, int]] = None
    scale: Sequence[float] = ()
    offset: Sequence[float] = ()
    mean: Sequence[float] = ()                     # PyTorch-style normalisation, instead of scale/offset
    std: Sequence[float] = ()
    labels: Optional[Path] = None
    channel_order: str = "RGB"
    # QAT and converter knobs
    qat_epochs: int = 2
    qat_lr: float = 1e-4
    select_tf_ops: bool = False
    seed: Optional[int] = None                     # None: the run's seed (42 for other models)
    skip_bad: bool = False                         # go on without unreadable images (a run's own config may say so)
    threads: Optional[int] = None                  # validation inference threads (None: all available)
    min_agreement: Optional[float] = None          # the mixed formats' target (None: formats.DEFAULT_MIN_AGREEMENT)
    keep_float: Sequence[str] = ()                 # the mixed formats keep these layers in float (no search)
    max_slowdown: Optional[float] = None           # the mixed search's latency budget, × the int8 artifact's p50
    explain: Optional[str] = None                  # a format whose per-layer errors the CLI prints; converted too
