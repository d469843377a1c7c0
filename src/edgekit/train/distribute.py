"""Training on more than one device or machine: which tf.distribute strategy, its cluster (TF_CONFIG), and what
each worker may write. TF_CONFIG is parsed without TensorFlow, so its errors are tested in the fast tier."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, List, Optional

from edgekit.errors import EdgeError
from edgekit_runtime.exits import Exit
from edgekit.layout import RunLayout

STRATEGIES = ("auto", "one", "mirrored", "multiworker")
TF_CONFIG = "TF_CONFIG"
_ADDRESS = re.compile(r"^[A-Za-z0-9_.\-\[\]:]+:\d{1,5}$")


class WorkerLost(EdgeError):
    """Another worker stopped answering: restart them all with --resume (EX_TEMPFAIL: an orchestrator retries)."""
    exit_code = Exit.LOST_WORKERS


@dataclass(frozen=True)
class ClusterSpec:
    """TF_CONFIG, checked: every task's address in order (chief first when there is one) and this task's place."""
    addresses: List[str]
    index: int              # this task's position in `addresses`
    task: str               # its type and index as TF_CONFIG wrote them, e.g. worker:1

    @property
    def workers(self) -> int:
        return len(self.addresses)

    @property
    def is_chief(self) -> bool:
        return self.index == 0

    @property
    def others(self) -> List[str]:
        return [a for i, a in enumerate(self.addresses) if i != self.index]


def parse_tf_config(raw: Optional[str]) -> ClusterSpec:
    """The standard TF_CONFIG (as TFJob, Vertex AI or a hand-written one sets it), or one sentence on what is wrong."""
    if not raw or not raw.strip():
        raise EdgeError("strategy multiworker needs the TF_CONFIG environment variable: "
                        '{"cluster": {"worker": ["host1:port", "host2:port"]}, "task": {"type": "worker", "index": 0}} '
                        "(README: More than one machine).")
    try:
        conf = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise EdgeError(f"TF_CONFIG is not valid JSON ({exc.msg} at character {exc.pos}).") from None
    if not isinstance(conf, dict) or not isinstance(conf.get("cluster"), dict) or not isinstance(conf.get("task"), dict):
        raise EdgeError('TF_CONFIG must be an object with "cluster" (job name → list of host:port) and "task" '
                        '({"type": ..., "index": ...}).')
    cluster, task = conf["cluster"], conf["task"]
    unknown = sorted(set(cluster) - {"chief", "worker", "evaluator"})
    if unknown:
        raise EdgeError(f"TF_CONFIG cluster has job(s) {', '.join(unknown)}; edgekit trains with 'chief' and 'worker' "
                        "jobs only (no parameter servers).")
    order: List[tuple] = []
    for job in ("chief", "worker"):
        addresses = cluster.get(job, [])
        if not isinstance(addresses, list) or not all(isinstance(a, str) for a in addresses):
            raise EdgeError(f'TF_CONFIG cluster "{job}" must be a list of "host:port" strings.')
        order += [(job, i, a) for i, a in enumerate(addresses)]
    if len(cluster.get("chief", [])) > 1:
        raise EdgeError('TF_CONFIG cluster "chief" holds more than one address; there is one chief.')
    if not order:
        raise EdgeError('TF_CONFIG cluster lists no "worker" (or "chief") addresses.')
    for job, i, address in order:
        if not _ADDRESS.match(address):
            raise EdgeError(f'TF_CONFIG cluster {job}[{i}] is {address!r}, not "host:port".')
    seen = [a for _, _, a in order]
    dupes = sorted({a for a in seen if seen.count(a) > 1})
    if dupes:
        raise EdgeError(f"TF_CONFIG lists {', '.join(dupes)} more than once; every task needs its own host:port.")
    kind, index = task.get("type"), task.get("index")
    if kind not in ("chief", "worker") or not isinstance(index, int) or isinstance(index, bool):
        raise EdgeError('TF_CONFIG task must be {"type": "chief" or "worker", "index": N}, '
                        f"not {json.dumps(task)}.")
    places = [p for p, (job, i, _) in enumerate(order) if job == kind and i == index]
    if not places:
        size = len(cluster.get(kind, []))
        raise EdgeError(f"TF_CONFIG task is {kind}:{index}, but the cluster has {size} {kind} address(es).")
    return ClusterSpec([a for _, _, a in order], places[0], f"{kind}:{index}")


@dataclass
class Cluster:
    """The chosen strategy and this process's place in it; kind 'one' is plain Keras (no strategy)."""
    kind: str
    strategy: object = None
    replicas: int = 1       # in sync, over every worker
    spec: Optional[ClusterSpec] = None
    _gather: object = field(default=None, repr=False)
    _tmp: Optional[Path] = field(default=None, repr=False)   # a non-chief worker's run directory, removed at the end

    @property
    def workers(self) -> int:
        return self.spec.workers if self.spec else 1

    @property
    def index(self) -> int:
        return self.spec.index if self.spec else 0

    @property
    def is_chief(self) -> bool:
        return self.spec is None or self.spec.is_chief

    @property
    def local_replicas(self) -> int:
        return self.replicas // self.workers

    def scope(self):
        return self.strategy.scope() if self.strategy is not None else contextlib.nullcontext()

    def describe(self, batch_size: int) -> str:
        if self.kind == "one":
            return "strategy one (no tf.distribute)"
        where = f", worker {self.index + 1} of {self.workers} ({self.spec.task})" if self.spec else ""
        return (f"strategy {self.kind}: {self.replicas} replica(s){where}; global batch {batch_size * self.replicas} "
                f"= {batch_size} per replica x {self.replicas}")

    def to_dict(self, batch_size: int) -> dict:
        return {"kind": self.kind, "replicas": self.replicas, "workers": self.workers,
                "per_replica_batch": batch_size, "global_batch": batch_size * self.replicas}

    # --- collectives: every worker calls each of these at the same point, or they all wait ---------------

    def gather(self, value: float) -> List[float]:
        """`value` from every replica, in replica order (one all-gather)."""
        if self.strategy is None:
            return [value]
        import tensorflow as tf
        if self._gather is None:  # in a tf.function: a collective run eagerly is slow and warns so
            s = self.strategy
            self._gather = tf.function(lambda v: s.gather(s.run(lambda: v), axis=0))
        return [float(v) for v in self._gather(tf.constant([value], tf.float64)).numpy()]

    def barrier(self) -> None:
        if self.workers > 1:
            self.gather(0.0)

    @contextlib.contextmanager
    def chief_first(self) -> Iterator[None]:
        """The chief runs the body first (building a cache), the others after it (finding it when the cache
        directory is shared, building their own copy when it is not)."""
        if not self.is_chief:
            self.barrier()
        yield
        if self.is_chief:
            self.barrier()

    def check_same_weights(self, model) -> str:
        """A fingerprint of the model's weights, the same on every worker (else a clear error); the log shows it."""
        digest = hashlib.sha256()
        for w in model.get_weights():
            digest.update(w.tobytes())
        mine = int(digest.hexdigest()[:12], 16)   # 48 bits: exact in a float64
        if self.workers > 1:
            every = self.gather(float(mine))
            if len(set(every)) > 1:
                raise EdgeError(f"the workers' weights differ after training (fingerprints "
                                f"{', '.join(f'{int(v):012x}' for v in every)}); their runs are not the same model.")
        return f"{mine:012x}"

    # --- data ----------------------------------------------------------------------------------------------

    def training_data(self, make: Callable[[int, int, int], object]):
        """`make(first_replica, local_replicas, total_replicas)` builds this worker's part of every global batch,
        one per-replica batch after another; under a strategy it is handed over as a distributed dataset."""
        if self.strategy is None:
            return make(0, 1, 1)
        local, total = self.local_replicas, self.replicas

        def per_worker(ctx):
            return make(ctx.input_pipeline_id * local, local, total)
        return self.strategy.distribute_datasets_from_function(per_worker)

    # --- files -----------------------------------------------------------------------------------------------

    def write_path(self, out: Path, resume: bool) -> Path:
        """Where this worker writes its run directory: `out` for the chief, a temporary copy for the others
        (removed by `cleanup`), which starts from the chief's checkpoints when resuming."""
        if self.is_chief:
            return out
        tmp = Path(tempfile.mkdtemp(prefix=f"edgekit-worker{self.index}-"))
        if resume:
            if RunLayout(out).config.is_file():
                shutil.copy2(RunLayout(out).config, RunLayout(tmp).config)
            if RunLayout(out).checkpoints.is_dir():
                shutil.copytree(RunLayout(out).checkpoints, RunLayout(tmp).checkpoints)
            else:
                raise EdgeError(f"worker {self.index} cannot see the chief's checkpoints in {out}: resuming needs --out "
                                "on storage every worker can read.")
        self._tmp = tmp
        return tmp

    def cleanup(self) -> None:
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)


def replica_slices(batches, first: int, local: int, batch_size: int, total: int):
    """From global batches of (x, y), the per-replica batches of replicas first … first+local-1; a partial
    global batch is dropped so that every replica takes the same number of steps."""
    for x, y in batches:
        if len(y) < batch_size * total:
            continue
        for r in range(first, first + local):
            yield x[r * batch_size:(r + 1) * batch_size], y[r * batch_size:(r + 1) * batch_size]


def outside_strategy(fn: Callable, *args, **kwargs):
    """Run `fn` with no strategy in scope (the scope is per thread): for loading saved models, whose weights
    files tf_keras cannot assign to a strategy's variables directly."""
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(fn, *args, **kwargs).result()


def plain_copy(cluster: "Cluster", model):
    """`model` with ordinary variables, for work one worker does alone (building a cache, in `outside_strategy`):
    under a multi-worker strategy even inference waits for every worker (BatchNorm statistics are read by
    all-reduce). Every worker calls this at the same point (reading the weights is itself such a collective)."""
    if cluster.workers == 1:
        return model
    weights = model.get_weights()

    def build():
        import tf_keras as keras
        plain = keras.models.clone_model(model)
        plain.set_weights(weights)
        return plain
    return outside_strategy(build)


def load_weights_file(model, path: Path) -> None:
    """A weights file into a model built under a strategy: tf_keras cannot assign the file's arrays to a
    strategy's variables directly, so a plain copy outside the strategy reads them."""
    def read():
        import tf_keras as keras
        plain = keras.models.clone_model(model)
        plain.load_weights(path)
        return plain.get_weights()
    model.set_weights(outside_strategy(read))


def copy_state(src, dst) -> None:
    """Weights and optimizer state (moments, step, weight average) of a model loaded outside the strategy
    into the same model built and compiled inside it."""
    dst.set_weights(src.get_weights())
    if getattr(src, "optimizer", None) is None or getattr(dst, "optimizer", None) is None:
        return
    dst.optimizer.build(dst.trainable_variables)
    theirs, ours = src.optimizer.variables, dst.optimizer.variables
    if len(theirs) != len(ours):
        raise EdgeError(f"the checkpoint's optimizer keeps {len(theirs)} values, this run's {len(ours)}: "
                        "it was saved by another configuration.")
    for mine, saved in zip(ours, theirs):
        mine.assign(saved.numpy())


def visible_gpus() -> int:
    import tensorflow as tf
    return len(tf.config.list_physical_devices("GPU"))


def choose(kind: str, env: Optional[dict] = None) -> str:
    """auto: multiworker when TF_CONFIG names more than one task, mirrored when more than one GPU is visible."""
    if kind != "auto":
        return kind
    raw = (env if env is not None else os.environ).get(TF_CONFIG)
    if raw:
        try:
            if parse_tf_config(raw).workers > 1:
                return "multiworker"
        except EdgeError:
            return "multiworker"  # so that the malformed TF_CONFIG is reported, not silently ignored
    return "mirrored" if visible_gpus() > 1 else "one"


def make_cluster(kind: str, connect_timeout: float) -> Cluster:
    """Create the strategy (before any other TensorFlow op runs in this process) and, for multiworker, meet
    every other worker within `connect_timeout` seconds or exit with the addresses tried."""
    kind = choose(kind)
    if kind == "one":
        return Cluster("one")
    import tensorflow as tf
    if kind == "mirrored":
        strategy = tf.distribute.MirroredStrategy()
        return Cluster("mirrored", strategy, strategy.num_replicas_in_sync)
    spec = parse_tf_config(os.environ.get(TF_CONFIG))
    message = (f"error: worker {spec.index} ({spec.task}) could not reach the other workers within "
               f"{connect_timeout:g} s; tried {', '.join(spec.others)} (from TF_CONFIG). Check that every worker is "
               "started and that these host:port addresses are reachable from here.")
    watchdog = _watchdog(connect_timeout, message)
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    cluster = Cluster("multiworker", strategy, strategy.num_replicas_in_sync, spec)
    cluster.barrier()   # the first collective: returns once every worker is there
    watchdog.stdin.close()  # the watchdog reads end-of-file and leaves
    watchdog.wait()
    return cluster


# TensorFlow's connect blocks in C++ holding the GIL, so no Python thread or signal handler of this process
# runs until it returns; a separate small process ends this one (SIGKILL) when it does not return in time.
_WATCHDOG = """
import os, select, signal, sys
parent, timeout, message = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
if not select.select([sys.stdin], [], [], timeout)[0]:
    sys.stderr.write(message + "\\n")
    sys.stderr.flush()
    os.kill(parent, signal.SIGKILL)
"""


def _watchdog(timeout: float, message: str):
    import subprocess
    return subprocess.Popen([sys.executable, "-c", _WATCHDOG, str(os.getpid()), str(timeout), message],
                            stdin=subprocess.PIPE)


def lost_worker_errors() -> tuple:
    import tensorflow as tf
    return (tf.errors.UnavailableError, tf.errors.DeadlineExceededError, tf.errors.CancelledError,
            tf.errors.AbortedError)
