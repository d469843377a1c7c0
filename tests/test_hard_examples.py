"""Hard-example sampling without TensorFlow: which images an epoch draws, when the images are rescored, and
that the scores a run keeps give a resumed run the same batches."""
import numpy as np
import pytest

from edgekit.train.hard_examples import SCORES_FILE, HardExamples, losses


def sampler(tmp_path, drop=0.25):
    return HardExamples(drop, tmp_path, score=lambda model: model)


def test_before_any_scores_an_epoch_is_the_plain_permutation(tmp_path):
    hard = sampler(tmp_path)
    assert np.array_equal(hard.order(np.random.default_rng(5), 40, 3), np.random.default_rng(5).permutation(40))


def test_an_epoch_draws_only_the_hardest_images_once_scores_are_a_whole_epoch_old(tmp_path):
    hard = sampler(tmp_path, drop=0.25)
    scores = np.arange(40, dtype=np.float32)[::-1].copy()   # image 39 is the easiest, image 0 the hardest
    hard.scored = {4: scores}
    same_epoch = hard.order(np.random.default_rng(1), 40, 4)  # the pipeline may have drawn epoch 4 already
    assert sorted(same_epoch) == list(range(40))
    later = hard.order(np.random.default_rng(1), 40, 5)
    assert len(later) == 40 and set(later) == set(range(30))   # the easiest quarter (30..39) is left out
    counts = np.bincount(later, minlength=40)
    assert counts[:30].min() >= 1 and counts[:30].max() <= 2 and counts[30:].sum() == 0
    assert np.array_equal(later, hard.order(np.random.default_rng(1), 40, 5))   # seeded


def test_rescoring_starts_after_the_warm_up_and_repeats(tmp_path):
    hard = sampler(tmp_path)
    due = [e for e in range(1, 101) if hard.due(e, planned=100, warmup_fraction=0.15)]
    assert due[:3] == [15, 23, 31] and due[-1] == 95
    # the last two epochs' scores would be drawn from by no epoch
    assert [e for e in range(1, 7) if hard.due(e, planned=6, warmup_fraction=0.15)] == [1, 2, 3, 4]


def test_losses_of_labels_and_of_soft_targets():
    probs = np.array([[0.5, 0.5], [0.9, 0.1]], np.float32)
    assert losses(probs, np.array([0, 1])) == pytest.approx([np.log(2), -np.log(0.1)])
    soft = np.array([[1.0, 0.0], [0.5, 0.5]], np.float32)
    assert losses(probs, soft) == pytest.approx([np.log(2), -0.5 * np.log(0.9) - 0.5 * np.log(0.1)])


def test_kept_scores_give_a_resumed_run_the_same_batches(tmp_path):
    hard = sampler(tmp_path)
    rng = np.random.default_rng(3)
    hard.scored = {2: rng.random(40).astype(np.float32), 5: rng.random(40).astype(np.float32)}
    hard._save(tmp_path / SCORES_FILE)
    again = sampler(tmp_path)
    for epoch in (3, 6):
        assert np.array_equal(hard.order(np.random.default_rng(epoch), 40, epoch),
                              again.order(np.random.default_rng(epoch), 40, epoch))
