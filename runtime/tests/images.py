"""The images the runtime's own tests classify: drawn from a seed, so no image files are stored."""
import numpy as np

CLASSES = ["red", "green", "blue"]
COLOURS = {"red": (200, 40, 40), "green": (40, 180, 60), "blue": (40, 60, 200)}
SIZE = 16


def images(n: int, seed: int):
    """(n, SIZE, SIZE, 3) uint8 images whose dominant colour is the class, and the class of each."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % len(CLASSES)
    x = np.empty((n, SIZE, SIZE, 3), np.uint8)
    for i, c in enumerate(y):
        arr = np.array(COLOURS[CLASSES[c]], np.float32) + rng.normal(0, 25, (SIZE, SIZE, 3))
        x[i] = np.clip(arr, 0, 255).astype(np.uint8)
    return x, y
