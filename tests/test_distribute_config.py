"""TF_CONFIG, the strategy choice and the per-replica batches, without TensorFlow (the fast tier)."""
import json

import numpy as np
import pytest

from edgekit.errors import EdgeError
from edgekit.train.config import build_config
from edgekit.train.distribute import choose, parse_tf_config, replica_slices


def tf_config(cluster, task):
    return json.dumps({"cluster": cluster, "task": task})


def test_a_worker_cluster_puts_worker_0_first_and_makes_it_chief():
    spec = parse_tf_config(tf_config({"worker": ["a:1", "b:2", "c:3"]}, {"type": "worker", "index": 1}))
    assert spec.workers == 3 and spec.index == 1 and not spec.is_chief and spec.others == ["a:1", "c:3"]
    assert parse_tf_config(tf_config({"worker": ["a:1", "b:2"]}, {"type": "worker", "index": 0})).is_chief


def test_a_chief_job_comes_before_the_workers():
    conf = tf_config({"chief": ["c:9"], "worker": ["a:1"]}, {"type": "worker", "index": 0})
    spec = parse_tf_config(conf)
    assert spec.addresses == ["c:9", "a:1"] and spec.index == 1 and spec.task == "worker:0"
    chief = parse_tf_config(tf_config({"chief": ["c:9"], "worker": ["a:1"]}, {"type": "chief", "index": 0}))
    assert chief.is_chief


@pytest.mark.parametrize("raw, says", [
    (None, "needs the TF_CONFIG environment variable"),
    ("", "needs the TF_CONFIG environment variable"),
    ("{cluster: [", "not valid JSON"),
    ('["a:1"]', 'must be an object with "cluster"'),
    (tf_config({"worker": ["a:1"], "ps": ["p:1"]}, {"type": "worker", "index": 0}), "no parameter servers"),
    (tf_config({"worker": ["a:1", "nonsense"]}, {"type": "worker", "index": 0}), "worker[1] is 'nonsense'"),
    (tf_config({"worker": ["a:1", "a:1"]}, {"type": "worker", "index": 0}), "a:1 more than once"),
    (tf_config({"worker": ["a:1", "b:1"]}, {"type": "worker", "index": 2}), "has 2 worker address(es)"),
    (tf_config({"worker": ["a:1"]}, {"type": "ps", "index": 0}), 'task must be {"type": "chief" or "worker"'),
    (tf_config({"worker": "a:1"}, {"type": "worker", "index": 0}), 'must be a list of "host:port"'),
    (tf_config({"chief": ["a:1", "b:2"]}, {"type": "chief", "index": 0}), "more than one address"),
])
def test_a_bad_tf_config_is_one_sentence(raw, says):
    with pytest.raises(EdgeError) as err:
        parse_tf_config(raw)
    assert says in str(err.value) and "\n" not in str(err.value)


def test_auto_picks_multiworker_only_for_a_cluster_of_several(monkeypatch):
    monkeypatch.setattr("edgekit.train.distribute.visible_gpus", lambda: 0)
    two = tf_config({"worker": ["a:1", "b:2"]}, {"type": "worker", "index": 0})
    one = tf_config({"worker": ["a:1"]}, {"type": "worker", "index": 0})
    assert choose("auto", {"TF_CONFIG": two}) == "multiworker"
    assert choose("auto", {"TF_CONFIG": one}) == "one"
    assert choose("auto", {"TF_CONFIG": "{broken"}) == "multiworker"  # so that its error is shown
    assert choose("auto", {}) == "one"
    monkeypatch.setattr("edgekit.train.distribute.visible_gpus", lambda: 2)
    assert choose("auto", {}) == "mirrored" and choose("one", {"TF_CONFIG": two}) == "one"


def test_strategy_key_is_checked_with_a_suggestion():
    with pytest.raises(EdgeError, match="Did you mean 'mirrored'"):
        build_config(None, {"strategy": "mirored"})
    assert build_config(None, {"strategy": "multiworker"}).strategy == "multiworker"


def test_replica_slices_share_each_global_batch_and_drop_the_partial_one():
    x, y = np.arange(22), np.arange(22) * 10
    batches = [(x[s:s + 8], y[s:s + 8]) for s in range(0, 22, 8)]   # 8, 8, 6
    # two workers, two replicas each, 2 images per replica
    parts = [list(replica_slices(iter(batches), first, 2, 2, 4)) for first in (0, 2)]
    assert [len(p) for p in parts] == [4, 4]   # 2 full global batches x 2 local replicas
    seen = np.sort(np.concatenate([xb for p in parts for xb, _ in p]))
    assert seen.tolist() == list(range(16))     # every image of the full batches once, the last 6 dropped
    assert all((yb == xb * 10).all() for p in parts for xb, yb in p)
