"""BenchConfig: every `edge bench` setting and its default, in one place."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Tuple

from edgekit.errors import EdgeError
from edgekit.benchmarks.remote.fleet import devices


@dataclass
class BenchConfig:
    run_dir: Path
    formats: Optional[str] = None          # comma list; None = every artifact in the manifest
    samples: Optional[int] = None          # test images for accuracy; None = the whole test split
    threads: Tuple[int, ...] = ()          # () = all cores the process may use
    batch: Tuple[int, ...] = (1,)
    runs: int = 50                         # timed runs per setting (at least)
    warmup: int = 5
    min_time: float = 0.0                  # keep timing until this many seconds have passed
    max_time: float = 30.0                 # stop a slow setting after this long (once it has 3 runs)
    latency_images: int = 16               # JPEGs cycled through for latency and cold start
    data: Optional[str] = None             # None: the run's own data
    out: Optional[Path] = None             # None: RUN_DIR/bench
    local: bool = True                     # also measure on this machine when --host is given
    python: Optional[str] = None           # interpreter for local measurements (e.g. a runtime-only venv)
    timeout: float = 3600.0                # per artifact process
    keep: bool = False                     # keep the plan directory (and the device's copy)
    # devices over SSH: --host (repeatable) and --hosts FILE, measured at the same time
    hosts: Tuple[str, ...] = ()
    hosts_file: Optional[Path] = None
    parallel: int = 4                      # devices measured at once
    port: Optional[int] = None
    identity: Optional[Path] = None
    known_hosts: Optional[Path] = None
    accept_new_host_key: bool = False
    device_samples: int = 500              # test images shipped to the device
    device_python: Optional[str] = None    # an interpreter on the device that already has the runtime's deps
    # regression gate
    baseline: Optional[Path] = None
    max_accuracy_drop: float = 0.5         # percentage points of top-1
    max_latency_growth: float = 10.0       # percent of p50
    seed: int = 0
    extra: dict = field(default_factory=dict)

    @property
    def host(self) -> Optional[str]:
        """Whether any device is benchmarked over SSH (the first one's destination), for the single-device paths."""
        return self.hosts[0] if self.hosts else (str(self.hosts_file) if self.hosts_file else None)

    def devices(self):
        return devices(self.hosts, self.hosts_file, self.port)

    def check(self) -> None:
        for name in ("runs", "latency_images", "device_samples", "parallel"):
            if getattr(self, name) < 1:
                raise EdgeError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}.")
        if self.warmup < 0:
            raise EdgeError(f"--warmup must be 0 or more, got {self.warmup}.")
        if self.samples is not None and self.samples < 1:
            raise EdgeError(f"--samples must be at least 1, got {self.samples}.")
        for name in ("threads", "batch"):
            values = getattr(self, name)
            if any(v < 1 for v in values):
                raise EdgeError(f"--{name} takes whole numbers of at least 1, got {','.join(map(str, values))}.")
        if self.min_time < 0 or self.max_time < 0:
            raise EdgeError("--min-time and --max-time must not be negative.")
        if self.max_accuracy_drop < 0 or self.max_latency_growth < 0:
            raise EdgeError("--max-accuracy-drop and --max-latency-growth must not be negative.")


def parse_ints(text: Optional[str], option: str) -> Tuple[int, ...]:
    """'1,2,4' → (1, 2, 4); None or '' → ()."""
    if not text:
        return ()
    values = []
    for part in str(text).replace(" ", "").split(","):
        if not part:
            continue
        try:
            values.append(int(part))
        except ValueError:
            raise EdgeError(f"{option} takes comma-separated whole numbers such as 1,2,4, got {part!r}.") from None
    return tuple(dict.fromkeys(values))
