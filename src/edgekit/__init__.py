"""edgekit: train, convert, run and benchmark image classifiers for small CPUs.

Importing edgekit selects tf_keras (Keras 2): TF Hub layers and tensorflow-model-optimization only
work with it, and TF 2.21 would otherwise hand out Keras 3. It also sets TensorFlow up for this CPU
(edgekit/hardware.py) before anything imports TensorFlow.
"""
import os
import time

# When the process began, as near as Python can tell: `edge train --time-budget` counts from here.
STARTED = time.perf_counter()

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# oneDNN where TensorFlow would leave it off (AVX2-only CPUs): before anything imports TensorFlow
from edgekit import hardware  # noqa: E402

hardware.configure()

__version__ = "0.1.0"
