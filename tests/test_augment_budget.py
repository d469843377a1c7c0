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


PROBE = budget.Probe(step_seconds=0.1, input_seconds=0.02, infer_seconds_per_image=1e-4, batches=8)


def test_budget_epoch_choice():
    # 30 min, 60 s spent, 100 steps of 0.11 s + 9 s validation + 0.5 s checkpoint = 20.5 s epochs, 20 s after:
    # (1800 * 0.97 - 80) // 20.5 = 81 whole epochs
    plan = budget.plan_rounds(1800, 60, PROBE, 100, 9.0, 0.5, 20)
    assert (plan.rounds, plan.split, plan.steps) == (81, 1, 100) and plan.describe() == "81 epochs of ~20 s"
    assert budget.epoch_seconds(PROBE, 100, 1000) == pytest.approx(100 * 0.11 + 0.1 + budget.CHECKPOINT_SECONDS)
    assert PROBE.input_share == pytest.approx(0.02 / 0.12)
    assert "17% of the 120 ms" in PROBE.describe(64)


def test_short_budget_trains_in_rounds_of_part_of_an_epoch():
    # 3.5 min, 30 s spent, 390 steps (~43 s) + 2 s validation a epoch, 20 s after: 3 whole epochs would fit,
    # too few to re-plan as they run; halves give 7 rounds
    plan = budget.plan_rounds(210, 30, PROBE, 390, 2.0, 0.5, 20)
    assert plan.split == 2 and plan.rounds >= budget.MIN_ROUNDS and plan.steps == 195
    assert "rounds of 1/2 epoch (195 steps" in plan.describe()
    # less than one epoch fits: still trains, on part of the data (rounds of a smaller share)
    small = budget.plan_rounds(60, 30, PROBE, 390, 2.0, 0.5, 5)
    assert small.split > 2 and small.rounds >= 1 and small.epochs < 1
    # arrays train in whole epochs only
    assert budget.plan_rounds(210, 30, PROBE, 390, 2.0, 0.5, 20, splits=(1,)).split == 1


def test_budget_that_cannot_hold_any_training_is_refused_before_training():
    with pytest.raises(EdgeError, match=r"cannot hold any training: 50 s are spent.*about 45 s.*Give at least 1.3 min"):
        budget.plan_rounds(60, 50, PROBE, 390, 2.0, 0.5, 20)


def test_activation_cache_views_shrink_to_leave_time_to_train_and_refuse_when_none_can():
    # 30 min, 60 s spent, 45,000 training + 5,000 val images; half of the ~1,600 s left may go to the cache
    views, seconds, why = budget.plan_cache_views(1800, 60, 0.006, 45000, 5000, 10000, 4)
    assert views == 2 and seconds == pytest.approx(0.006 * (2 * 45000 + 5000))
    assert why.startswith("cache_views 4 -> 2: 4 views would take ~1110 s")
    assert budget.plan_cache_views(1800, 60, 0.010, 45000, 5000, 10000, 4)[0] == 1
    assert budget.plan_cache_views(1800, 60, 0.004, 45000, 5000, 10000, 4) == (4, pytest.approx(740), None)
    with pytest.raises(EdgeError, match=r"cannot hold the activation cache and any training: one view .* about 500 s"):
        budget.plan_cache_views(600, 60, 0.010, 45000, 5000, 10000, 4)


def test_reserve_for_what_follows_scales_with_a_slower_cpu():
    fast = budget.Probe(0.1, 0.0, 1 / 8000, 8)
    slow = budget.Probe(0.1, 0.0, 1 / 1100, 8)
    assert budget.reserve_seconds(0, slow) == 0
    assert budget.reserve_seconds(60, fast) == 60                      # never below the reference
    assert budget.reserve_seconds(60, slow) == pytest.approx(90)       # half the reference's rate: capped at 1.5x
    assert budget.reserve_seconds(60, budget.Probe(0.1, 0, 1.0, 8)) == 60 * budget.MAX_RESERVE_SCALE


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
