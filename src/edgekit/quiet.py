"""Keeps TensorFlow's start-up noise (absl, oneDNN, CUDA probing) off the terminal unless asked for.

TensorFlow's native code writes its log lines to file descriptor 2 before Python can filter anything,
and TF_CPP_MIN_LOG_LEVEL no longer holds back the ones printed while its libraries load. So the first
`import tensorflow` of an `edge` command runs with descriptor 2 captured; what it printed is then
replayed, less the lines known to be noise. `--verbose` or EDGE_DEBUG=1 leaves everything as it was.
"""
from __future__ import annotations

import importlib.abc
import importlib.util
import logging
import os
import re
import sys
import warnings
from edgekit_runtime.native import quiet_native_stderr

# Lines TensorFlow prints on every start on a CPU-only machine; none of them asks the user to act.
NOISE = re.compile(r"absl::InitializeLog|\] oneDNN custom operations|cudart_stub|cuda_platform|cuInit|"
                   r"cpu_feature_guard|To enable the following instructions|rebuild TensorFlow with")


def verbose_requested() -> bool:
    return os.environ.get("EDGE_DEBUG", "") not in ("", "0")


def install(verbose: bool = False) -> None:
    """Quiet TensorFlow for the rest of this process (call before it is imported), or make it verbose."""
    if verbose or verbose_requested():
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"
        return
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"  # native INFO/WARNING/ERROR after start-up (the cuInit 'error')
    logging.getLogger("absl").setLevel(logging.ERROR)
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    for module in ("tensorflow", "tf_keras", "tensorflow_model_optimization", "tensorflow_hub", "keras"):
        warnings.filterwarnings("ignore", module=module)
    if "tensorflow" not in sys.modules and not any(isinstance(f, _QuietImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietImport())


class _QuietImport(importlib.abc.MetaPathFinder):
    """Finds `tensorflow` once, and loads it with descriptor 2 captured."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            spec.loader = _CapturingLoader(spec.loader)
        return spec


class _CapturingLoader(importlib.abc.Loader):
    def __init__(self, loader) -> None:
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        keep = lambda line: bool(line.strip()) and not NOISE.search(line)  # noqa: E731
        captured: list = []
        try:
            with quiet_native_stderr(replay=True, keep=keep) as captured:
                self._loader.exec_module(module)
        except BaseException:  # a failed import: what it printed may say why
            print("\n".join(line for line in "".join(captured).splitlines() if keep(line)), file=sys.stderr)
            raise

    def __getattr__(self, name):  # get_resource_reader, is_package …: as the real loader
        return getattr(self._loader, name)
