"""`--strategy parameter-server`: `tf.distribute.ParameterServerStrategy`.

Roles come from `TF_CONFIG` in the standard way: one `chief` (the
coordinator, which runs Keras `fit`, the callbacks, evaluation and the
checkpoints), `worker` tasks (which run training steps) and `ps` tasks (which
hold the variables). This module is the chief's side: the strategy, the
sharded input and the step scheduling; a worker or ps task serves
(`cluster.py`).

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
  A lost chief leaves the servers running: `fit --resume` on a new one opens
  a new context on them (its own tables; the dead chief's are out of its
  reach), restores the checkpoint, written at an epoch's end, and trains the
  epoch the old chief died in again from its first step.

No XLA and no fused row kernel: the step's variables live on other
processes.
"""
from __future__ import annotations

from typing import Optional

import tensorflow as tf

from tf_sharpcf.data.interactions import Interactions
from tf_sharpcf.errors import ConfigError
from tf_sharpcf.data.input_pipeline import feistel_round_keys, index_permutation
from tf_sharpcf.data.negatives import NegativeSampler, negative_key
from tf_sharpcf.distribute.cluster import (cluster_config, quiet_lost_peer_destructors, release_nothing_at_exit,
                                          wait_for_tasks)


def make_strategy(wait_s: Optional[float] = None) -> tf.distribute.ParameterServerStrategy:
    """The strategy for the chief (coordinator) task named in TF_CONFIG, with
    every table split by rows across the cluster's parameter servers.

    Connects to every worker and ps task, so it first waits up to `wait_s`
    seconds (`cluster.wait_for_tasks`) for all of them to listen: a
    TrainingError names the ones that do not, where TensorFlow would retry
    without a word.
    """
    config = cluster_config()
    if config["task"]["type"] != "chief":
        raise ConfigError(f"the parameter-server strategy is created on the chief; this task is "
                          f"{config['task']['type']!r} (run `serve` there)")
    wait_for_tasks(config, wait_s)
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    shards = len(config["cluster"]["ps"])
    release_nothing_at_exit()      # no `Failed to remove function remotely` after our last line
    quiet_lost_peer_destructors()      # nor a destructor's `UnavailableError` around our error
    return tf.distribute.ParameterServerStrategy(
        resolver, variable_partitioner=tf.distribute.experimental.partitioners.FixedShardsPartitioner(shards))


class ShardedBatches(tf.Module):
    """Training batches computed on the worker from (epoch, step).

    Created under the strategy's scope: the canonical training table's users
    and items become [N] int32 `ShardedVariable`s on the parameter servers,
    and the negative sampler's hash table of training pairs is copied to
    every worker (a `DistributedTable`). `batch(epoch, step)` is what step
    `step` of epoch `epoch` trains, a pure function of (seed, epoch, step).
    """

    def __init__(self, data: Interactions, batch_size: int, seed: int, negatives: int = 1, sampler=None):
        super().__init__(name="sharded_batches")
        if data.num_train >= 2 ** 31:
            raise ConfigError(f"{data.num_train} training interactions: element ids are int32")
        self.num_train, self.batch_size = int(data.num_train), int(batch_size)
        self.seed, self.negatives = int(seed), int(negatives)
        self.users = tf.Variable(data.train_users.astype("int32"), trainable=False, name="train_users")
        self.items = tf.Variable(data.train_items.astype("int32"), trainable=False, name="train_items")
        # A hash-table sampler (kernel=False): workers need no custom op library.
        self.sampler = sampler if sampler is not None else NegativeSampler(data, kernel=False)

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
        key = tf.random.experimental.stateless_fold_in(negative_key(self.seed, epoch), step)
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
