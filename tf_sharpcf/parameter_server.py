"""`--strategy parameter-server`: `tf.distribute.ParameterServerStrategy`.

Roles come from `TF_CONFIG` in the standard way: one `chief` (the
coordinator, which runs Keras `fit`, the callbacks, evaluation and the
checkpoints), `worker` tasks (which run training steps) and `ps` tasks (which
hold the variables). `fit --strategy parameter-server` on a worker or ps task
starts that task's server and serves until it is stopped; on the chief it
trains.

* **Tables.** Under the strategy a `FixedShardsPartitioner` over the P
  parameter servers turns every table into a `ShardedVariable` split by row
  range: the embeddings, their optimizer slots (created beside each shard),
  SharpCF's trajectory table (by element-id range) and the training
  interactions themselves (`ShardedBatches`). Reads are
  `tf.nn.embedding_lookup` (`sparse.gather_rows`): only a batch's rows travel.
  The row-wise optimizers (`lazyadam`, `adagrad`, `sgd`) update each shard's
  rows with scatter ops on the server that holds it.
* **Input, exactly once.** The coordinator schedules step s of epoch e as a
  closure with arguments (e, s); the worker that runs it computes the batch
  itself: positions [sB, sB + b) of the epoch's permutation
  (`input_pipeline.index_permutation`, a Feistel bijection of [0, N) keyed by
  (seed, e)), their element ids, users and items gathered from the sharded
  interaction tables, and K negatives keyed by (seed, e, s). Whichever worker
  runs it, and however often, step (e, s) trains the same batch, so every
  element is trained once per epoch (plus the re-runs of failed steps).
* **Retries.** The coordinator re-runs a closure whose worker failed on
  another worker. SharpCF's table then has E + 1 slots (`TrajectoryTable`,
  retry_safe): epoch e writes slot e mod (E+1) and reads (e − E) mod (E+1),
  so a re-run never reads what its first attempt wrote. Keras joins all of an
  epoch's closures before the epoch ends, so epochs never overlap.
* **What is lost against one device.** Workers update the tables
  asynchronously (each applies its own batch's gradients to the current
  rows), so a run is not bit-equal to one device, nor to another run with the
  same seed. The batches are the same; their order of application is not.
  APR needs no cross-replica sum: a step is one worker's whole batch.
* **Failures.** A lost worker is survived (its closures are re-run); a lost
  parameter server ends the run with an error naming the last good
  checkpoint, and `fit --resume` continues from it once the servers are back.

No XLA and no fused row kernel: the step's variables live on other
processes.
"""
from __future__ import annotations

import json
import os
import re
import socket
import sys
import threading
import time
from typing import Optional

import tensorflow as tf

from tf_sharpcf.checkpointing import LOST_PEER
from tf_sharpcf.datasets import Interactions
from tf_sharpcf.errors import ConfigError
from tf_sharpcf.input_pipeline import NegativeSampler, feistel_round_keys, index_permutation

ROLES = ("chief", "worker", "ps")


def cluster_config(environ=None) -> dict:
    """TF_CONFIG, parsed and checked -> {"cluster": {...}, "task": {"type", "index"}}.

    Raises ConfigError naming the problem: TF_CONFIG missing or not JSON, no
    `ps` / `worker` / single `chief` task, or this task not in the cluster.
    """
    raw = (os.environ if environ is None else environ).get("TF_CONFIG")
    if not raw:
        raise ConfigError("--strategy parameter-server needs TF_CONFIG naming the cluster's chief, worker "
                          "and ps tasks and this task (docs/scaling.md)")
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as err:
        raise ConfigError(f"TF_CONFIG is not valid JSON: {err}") from None
    cluster = config.get("cluster") if isinstance(config, dict) else None
    task = config.get("task") if isinstance(config, dict) else None
    if not isinstance(cluster, dict):
        raise ConfigError("TF_CONFIG has no \"cluster\" object")
    for job in ("ps", "worker"):
        if not cluster.get(job):
            raise ConfigError(f"TF_CONFIG's cluster has no {job!r} tasks: --strategy parameter-server needs "
                              f"at least one ps and one worker task, got jobs {sorted(cluster)}")
    if len(cluster.get("chief") or []) != 1:
        raise ConfigError("TF_CONFIG's cluster needs exactly one 'chief' task (the coordinator), got "
                          f"{len(cluster.get('chief') or [])}")
    unknown = sorted(set(cluster) - set(ROLES))
    if unknown:
        raise ConfigError(f"TF_CONFIG's cluster has jobs {unknown}; parameter-server uses only {list(ROLES)}")
    if not isinstance(task, dict) or task.get("type") not in ROLES:
        raise ConfigError(f"TF_CONFIG's \"task\" must name this task's type, one of {list(ROLES)}, got {task!r}")
    index = task.get("index", 0)
    if not isinstance(index, int) or not 0 <= index < len(cluster[task["type"]]):
        raise ConfigError(f"TF_CONFIG's task index {index!r} is not in its {task['type']!r} job "
                          f"({len(cluster[task['type']])} tasks)")
    return {"cluster": cluster, "task": {"type": task["type"], "index": index}}


def role(environ=None) -> str:
    """This process's task type in TF_CONFIG: chief, worker or ps."""
    return cluster_config(environ)["task"]["type"]


def make_strategy() -> tf.distribute.ParameterServerStrategy:
    """The strategy for the chief (coordinator) task named in TF_CONFIG, with
    every table split by rows across the cluster's parameter servers."""
    config = cluster_config()
    if config["task"]["type"] != "chief":
        raise ConfigError(f"the parameter-server strategy is created on the chief; this task is "
                          f"{config['task']['type']!r} (run `serve` there)")
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    shards = len(config["cluster"]["ps"])
    return tf.distribute.ParameterServerStrategy(
        resolver, variable_partitioner=tf.distribute.experimental.partitioners.FixedShardsPartitioner(shards))


def serve(parent_pid: Optional[int] = None, timeout_s: Optional[float] = None) -> None:
    """Runs this worker or ps task's server (TF_CONFIG) until it is stopped.

    parent_pid: exit when that process is gone; timeout_s: exit after that
    long. Both are for tests and scripts that must not leave servers behind;
    a real cluster's servers run until killed.
    """
    config = cluster_config()
    kind, index = config["task"]["type"], config["task"]["index"]
    if kind == "chief":
        raise ConfigError("serve() runs a worker or ps task; the chief trains (fit)")
    server = tf.distribute.Server(tf.train.ClusterSpec(config["cluster"]), job_name=kind, task_index=index,
                                  protocol="grpc", start=True)
    if parent_pid is not None or timeout_s is not None:
        _exit_when(parent_pid, timeout_s)
    print(f"{kind} {index} serving at {config['cluster'][kind][index]}", file=sys.stderr, flush=True)
    server.join()


def _exit_when(parent_pid, timeout_s) -> None:
    deadline = None if timeout_s is None else time.monotonic() + timeout_s

    def watch():
        while True:
            if parent_pid is not None and not _alive(parent_pid):
                os._exit(0)
            if deadline is not None and time.monotonic() > deadline:
                os._exit(0)
            time.sleep(0.5)

    threading.Thread(target=watch, daemon=True).start()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class ShardedBatches(tf.Module):
    """Training batches computed on the worker from (epoch, step).

    Created under the strategy's scope: the canonical training table's users
    and items become [N] int32 `ShardedVariable`s on the parameter servers,
    and the negative sampler's hash table of training pairs is copied to
    every worker (a `DistributedTable`). `batch(epoch, step)` is what step
    `step` of epoch `epoch` trains, a pure function of (seed, epoch, step).
    """

    def __init__(self, data: Interactions, batch_size: int, seed: int, negatives: int = 1):
        super().__init__(name="sharded_batches")
        if data.num_train >= 2 ** 31:
            raise ConfigError(f"{data.num_train} training interactions: element ids are int32")
        self.num_train, self.batch_size = int(data.num_train), int(batch_size)
        self.seed, self.negatives = int(seed), int(negatives)
        self.users = tf.Variable(data.train_users.astype("int32"), trainable=False, name="train_users")
        self.items = tf.Variable(data.train_items.astype("int32"), trainable=False, name="train_items")
        self.sampler = NegativeSampler(data)

    @property
    def steps_per_epoch(self) -> int:
        return -(-self.num_train // self.batch_size)

    def batch(self, epoch: tf.Tensor, step: tf.Tensor):
        """-> (element_id, user, pos_item: [b] int32, neg_items: [b, K] int32):
        b = B, except at the epoch's last step when B does not divide N
        (N mod B rows there)."""
        epoch, step = tf.cast(epoch, tf.int64), tf.cast(step, tf.int64)
        start = step * self.batch_size
        size = tf.minimum(tf.constant(self.batch_size, tf.int64), self.num_train - start)
        positions = start + tf.range(size, dtype=tf.int64)
        ids = tf.cast(index_permutation(positions, self.num_train, feistel_round_keys(self.seed, epoch)),
                      tf.int32)
        users = tf.nn.embedding_lookup(self.users, ids)
        items = tf.nn.embedding_lookup(self.items, ids)
        key = tf.random.experimental.stateless_fold_in(
            tf.stack([tf.constant(self.seed, tf.int64) + 7919, epoch]), step)
        return ids, users, items, self.sampler(users, key, self.negatives)


class ScheduledSteps(tf.keras.callbacks.Callback):
    """Keras `fit` with the coordinator scheduling step (epoch, s) closures.

    `install(model)` (after each `compile`) replaces the model's train
    function: each call Keras makes schedules the epoch's next step on
    whichever worker is free and returns its logs as a `RemoteValue`; Keras
    joins them at the end of the epoch. The iterator Keras passes is not read
    (`dummy_input` feeds it).
    """

    def __init__(self, strategy: tf.distribute.ParameterServerStrategy, batches: ShardedBatches):
        super().__init__()
        self.strategy, self.batches = strategy, batches
        self.coordinator = tf.distribute.coordinator.ClusterCoordinator(strategy)
        self._epoch, self._step = 0, 0
        self.scheduled = 0           # steps scheduled by this process
        with strategy.scope():       # step runs begun on any worker, re-runs of failed steps included
            self.runs = tf.Variable(0, dtype=tf.int64, trainable=False, name="step_runs")

    def install(self, model) -> None:
        strategy, batches, runs = self.strategy, self.batches, self.runs

        @tf.function
        def step(epoch, s):
            runs.assign_add(1)
            return strategy.run(model.train_step, args=(batches.batch(epoch, s),))

        def train_function(_iterator):
            s, self._step = self._step, self._step + 1
            self.scheduled += 1
            return self.coordinator.schedule(step, args=(tf.constant(self._epoch, tf.int64),
                                                         tf.constant(s, tf.int64)))

        model.train_function = train_function

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch, self._step = epoch, 0


def dummy_input() -> tf.keras.utils.experimental.DatasetCreator:
    """What `fit` iterates under the coordinator; `ScheduledSteps` ignores it."""
    return tf.keras.utils.experimental.DatasetCreator(lambda _context: tf.data.Dataset.from_tensors(0).repeat())


def free_local_ports(n: int):
    """n distinct free TCP ports on 127.0.0.1, for a cluster of local processes
    (tests, benchmarks). All are bound at once so that they differ."""
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def wait_listening(address: str, proc=None, timeout_s: float = 120) -> None:
    """Returns once a server accepts connections at `address` ("host:port");
    RuntimeError if `proc` (its process, if given) exits first, TimeoutError
    after `timeout_s`."""
    host, port = address.rsplit(":", 1)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server for {address} exited with {proc.returncode}")
        try:
            socket.create_connection((host, int(port)), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"no server listening at {address} after {timeout_s} s")


def is_server_loss(err: BaseException) -> bool:
    """True for the errors the coordinator raises when a parameter server is
    gone (a lost worker is survived: its steps run again elsewhere)."""
    return isinstance(err, LOST_PEER)


def describe_loss(err: tf.errors.OpError) -> str:
    """One line for a lost server: which task, if TensorFlow says (a ps task
    before a worker named in passing), and why."""
    text = err.message or ""
    task = (re.search(r"/job:(ps)/replica:\d+/task:(\d+)", text) or
            re.search(r"/job:(worker)/replica:\d+/task:(\d+)", text))
    lines = [line.strip() for line in text.splitlines()
             if line.strip() and not line.startswith("Graph execution error")]
    why = lines[0][:200] if lines else type(err).__name__
    who = f"{task.group(1)} task {task.group(2)}" if task else "a parameter server"
    return f"the cluster lost {who} ({type(err).__name__}: {why})"


def main(argv=None) -> int:
    """`python -m tf_sharpcf.parameter_server [--parent-pid P] [--timeout-s S]`:
    serve this worker or ps task of TF_CONFIG."""
    import argparse
    parser = argparse.ArgumentParser(prog="python -m tf_sharpcf.parameter_server", description=main.__doc__)
    parser.add_argument("--parent-pid", type=int, default=None, help="exit when this process is gone")
    parser.add_argument("--timeout-s", type=float, default=None, help="exit after this many seconds")
    args = parser.parse_args(argv)
    try:
        serve(args.parent_pid, args.timeout_s)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
