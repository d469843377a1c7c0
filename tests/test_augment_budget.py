"""Augmentation policies and the time budget's epoch choice: numpy only, no TensorFlow."""
import subprocess
import sys

import numpy as np
import pytest

from edgekit.errors import EdgeError
from edgekit.train import budget
from edgekit.train.augment import alternating_flip, cutout, pad_crop, parse_policy


def batch(n=16, h=12, w=10, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def test_no_tensorflow_needed():
    code = "import sys, edgekit.train.augment, edgekit.train.budget; print('tensorflow' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"


@pytest.mark.parametrize("policy", ["fast", "none", "flip,crop:2,cutout:4", ["crop:3"], ["cutout"], ["altflip", "crop:2"]])
def test_ops_keep_shapes_and_dtype_and_are_seeded(policy):
    x = batch()
    p = parse_policy(policy)
    a = p.apply(x, np.random.default_rng(5))
    b = p.apply(x, np.random.default_rng(5))
    c = p.apply(x, np.random.default_rng(6))
    assert a.shape == x.shape and a.dtype == np.uint8
    assert np.array_equal(a, b)
    assert a is not x and np.array_equal(x, batch())  # the input is not changed
    if not p.is_none:
        assert not np.array_equal(a, c)


def test_ops_keep_each_image_in_its_slot():
    """Labels stay valid: image i of the output is made from image i of the input only."""
    x = np.zeros((8, 12, 12, 3), np.uint8)
    x[np.arange(8), :, :, 0] = (np.arange(8) * 30 + 10)[:, None, None]  # image i is filled with one value
    out = parse_policy(["flip", "crop:4", "cutout:4"]).apply(x, np.random.default_rng(1))
    for i in range(8):
        assert set(np.unique(out[i, ..., 0])) <= {0, i * 30 + 10}


def test_alternating_flip_shows_every_image_both_ways_over_two_epochs():
    x = batch(n=400)
    index = np.arange(1000, 1400)

    def flipped(epoch, seed=3):
        out = alternating_flip(x, index, epoch, seed)
        assert out.shape == x.shape and out.dtype == np.uint8 and out is not x
        # each image is either itself or its mirror, never another image's
        assert all(np.array_equal(o, i) or np.array_equal(o, i[:, ::-1]) for o, i in zip(out, x))
        return (out != x).any(axis=(1, 2, 3))

    even, odd = flipped(0), flipped(1)
    assert 0.4 < even.mean() < 0.6 and np.array_equal(odd, ~even)  # a seeded half, then the other half
    assert np.array_equal(flipped(2), even) and np.array_equal(flipped(0), even)
    assert not np.array_equal(flipped(0, seed=4), even)
    # an image flips by where it sits in the training set, not where it falls in the batch
    again = alternating_flip(x[::-1], index[::-1], 0, 3)
    assert np.array_equal((again != x[::-1]).any(axis=(1, 2, 3)), even[::-1])


def test_crop_is_a_translation_with_reflected_borders():
    x = np.arange(5 * 5, dtype=np.uint8).reshape(1, 5, 5, 1).repeat(3, -1)
    seen = set()
    for s in range(40):
        out = pad_crop(x, 1, np.random.default_rng(s))
        seen.add(out.tobytes())
        padded = np.pad(x[0, ..., 0], 1, mode="reflect")
        windows = {padded[dy:dy + 5, dx:dx + 5].tobytes() for dy in range(3) for dx in range(3)}
        assert out[0, ..., 0].tobytes() in windows
    assert len(seen) == 9  # every offset of a 1-pixel pad is drawn


def test_cutout_zeroes_at_most_one_square():
    x = np.full((32, 16, 16, 3), 200, np.uint8)
    out = cutout(x, 6, np.random.default_rng(0))
    zeroed = (out[..., 0] == 0).sum(axis=(1, 2))
    assert zeroed.max() <= 36 and zeroed.min() >= 9 and (out[out != 0] == 200).all()


@pytest.mark.parametrize("value, message", [
    ("fsat", "Did you mean 'fast'"),
    (["flip", "rotate"], "unknown op 'rotate'"),
    (["crop:x"], "whole number"),
    (["crop:0"], "at least 1"),
    (["flip:3"], "takes no parameter"),
    (["flip", "flip"], "listed twice"),
    (["seed", "flip"], "whole policy"),
    (["flip", "altflip"], "list one of them"),
])
def test_bad_policies_say_what_is_wrong(value, message):
    with pytest.raises(EdgeError, match=message):
        parse_policy(value)


def test_older_true_false_switch_still_reads():
    assert parse_policy(True).is_seed and parse_policy(False).is_none and parse_policy("true").is_seed
    assert parse_policy("fast").key() == ["flip", "crop:4"]


def test_budget_epoch_choice():
    # 30 min, 60 s spent, 40 s epochs, 20 s to evaluate/write: (1800*0.97 - 80) // 40 = 41
    assert budget.plan_epochs(1800, 60, 40, 20) == 41
    assert budget.plan_epochs(1800, 60, 40, 20, max_epochs=10) == 10
    # twice the speed, twice the epochs (up to the fixed costs)
    assert budget.plan_epochs(1800, 60, 20, 20) == 83
    p = budget.Probe(step_seconds=0.1, input_seconds=0.02, infer_seconds_per_image=1e-4, batches=8)
    assert budget.epoch_seconds(p, 100, 1000) == pytest.approx(100 * 0.11 + 0.1 + budget.CHECKPOINT_SECONDS)
    assert p.input_share == pytest.approx(0.02 / 0.12)
    assert "17% of the 120 ms" in p.describe(64)


def test_budget_that_cannot_hold_one_epoch_is_refused_before_training():
    with pytest.raises(EdgeError, match=r"cannot hold one epoch: 50 s are spent.*about 40 s.*Give at least 1.9 min"):
        budget.plan_epochs(60, 50, 40, 20)


def test_teacher_softening_keeps_the_order_and_flattens():
    from edgekit.train.teacher import blend, soften
    p = np.array([[0.9, 0.09, 0.01], [0.2, 0.5, 0.3]], np.float32)
    assert soften(p, 1.0) is p
    s2 = soften(p, 2.0)
    want = np.sqrt(p) / np.sqrt(p).sum(1, keepdims=True)      # softmax(log p / 2)
    np.testing.assert_allclose(s2, want, rtol=1e-5)
    assert (s2.argsort(1) == p.argsort(1)).all() and s2[0, 0] < p[0, 0] and s2[0, 2] > p[0, 2]
    t = blend(np.array([0, 1]), p, 0.5, temperature=3.0)
    np.testing.assert_allclose(t.sum(1), 1, rtol=1e-6)
    np.testing.assert_allclose(t[0], 0.5 * soften(p, 3.0)[0] + 0.5 * np.array([1, 0, 0]), rtol=1e-6)
