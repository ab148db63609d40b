"""Data-parallel training with `tf.distribute`: strategies, input, replica sums.

Every table (embeddings, optimizer slots, SharpCF's trajectory table) is a
mirrored variable: each replica holds a full copy and the copies stay equal.
A global batch of B rows is cut into R contiguous slices, one per replica, in
replica order (replica r gets rows [⌊rB/R⌋, ⌊(r+1)B/R⌋)), each row keeping its
element id. Training on R replicas then computes what one device computes on
the global batch:

* loss: each replica's objective is a mean over its b_r rows; scaled by
  b_r / B it becomes that replica's share of the global mean, and the
  optimizer's all-reduce SUM of the gradients gives ∇(Σ_r sum_r / B), the
  gradient of the global batch mean. Logs are combined the same way.
* APR: the perturbation of a table row needs the gradient of the global batch
  loss w.r.t. that row: `sum_rows_over_global_batch` all-gathers the
  (row id, b_r/B · gradient) pairs of every replica and sums per id.
* SharpCF: `TrajectoryTable.update` all-gathers the global batch's
  (element id, score) pairs and every replica applies the same scatter to its
  own copy of the table (aggregation NONE: a replica-context write changes
  the local copy only), so the copies stay equal and an element's old score is
  its own whichever replica trained it E epochs earlier.

The in-graph replica maths (the loss share, the all-gathers, the APR row
sums) lives in `replica.py`, a leaf the loss code imports without the data
layer; it is re-exported here. With one replica (the default strategy) every
helper is the identity and adds no op to the graph.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence, Union

import tensorflow as tf

from tf_sharpcf.config import STRATEGIES
from tf_sharpcf.datasets import Interactions
from tf_sharpcf.errors import ConfigError
from tf_sharpcf.input_pipeline import chunks_per_epoch, steps_per_epoch, training_dataset
from tf_sharpcf.replica import (gather_across_replicas, global_batch_share, replica_context,  # noqa: F401
                                sum_across_replicas, sum_rows_over_global_batch)


# ---------------------------------------------------------------------------
# Strategies and input


_strategies = {}


def make_strategy(name: str) -> tf.distribute.Strategy:
    """default: one device; mirrored: every local GPU, else every local (logical)
    CPU device; multi-worker: `MultiWorkerMirroredStrategy` over the cluster in
    `TF_CONFIG` (must be created before TensorFlow runs any op);
    parameter-server: `ParameterServerStrategy` from `TF_CONFIG`, on its chief
    (`parameter_server.make_strategy`).

    One instance per kind and process, reused by later runs (the tuner's):
    every new MirroredStrategy starts its collective group and instance keys
    from the same numbers, so a second one would collide with the first.
    """
    if name == "default":
        return tf.distribute.get_strategy()
    if name not in STRATEGIES:
        raise ConfigError(f"invalid --strategy: must be one of {', '.join(STRATEGIES)}, got {name!r}")
    if name not in _strategies:
        if name == "parameter-server":
            from tf_sharpcf import parameter_server      # imports the data layer: only when asked
            _strategies[name] = parameter_server.make_strategy()
        elif name == "mirrored":
            devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
            _strategies[name] = tf.distribute.MirroredStrategy([d.name for d in devices])
        else:
            _strategies[name] = tf.distribute.MultiWorkerMirroredStrategy()
    return _strategies[name]


def replica_slice(columns: Sequence[tf.Tensor], replica: tf.Tensor, num_replicas: int):
    """Rows [⌊rB/R⌋, ⌊(r+1)B/R⌋) of every [B, ...] column: replica r's part of a global batch.

    Concatenating the R slices in replica order gives the batch back; their
    sizes differ by at most one (e.g. B = 5, R = 2: rows 0-1 and 2-4).
    """
    n = tf.shape(columns[0], out_type=tf.int64)[0]
    replica = tf.cast(replica, tf.int64)
    lo, hi = replica * n // num_replicas, (replica + 1) * n // num_replicas
    return tuple(c[lo:hi] for c in columns)


def distribute_batches(strategy: tf.distribute.Strategy, dataset: tf.data.Dataset):
    """Global batches (tuples of [B] tensors) -> each replica's slice of each batch.

    Every worker builds the same global pipeline (an epoch is a pure function
    of (seed, epoch)) and keeps its own replicas' slices, element ids intact;
    `distribute_datasets_from_function` hands a worker's consecutive elements to
    its replicas in order, so the worker emits, per global batch, the slices of
    its replicas w·L, ..., w·L + L − 1 (L replicas per worker, w its index).
    With one replica the dataset is returned as it is.
    """
    if strategy.num_replicas_in_sync == 1:
        return dataset

    def dataset_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
        total = context.num_replicas_in_sync
        local = total // context.num_input_pipelines
        first = context.input_pipeline_id * local

        def slices(*columns):
            return tf.data.Dataset.range(first, first + local).map(
                lambda r: replica_slice(columns, r, total))

        return dataset.flat_map(slices)

    return strategy.distribute_datasets_from_function(dataset_fn)


def is_mirrored(strategy: tf.distribute.Strategy) -> bool:
    """True for MirroredStrategy and MultiWorkerMirroredStrategy, even with one
    replica: their cross-replica steps (the optimizer's all-reduce, this
    module's gathers) are merge calls, which cannot sit inside the train
    step's own loop over a chunk of batches."""
    return isinstance(strategy, (tf.distribute.MirroredStrategy, tf.distribute.MultiWorkerMirroredStrategy))


def steps_per_execution(requested: int, num_train: int, batch_size: int) -> int:
    """Batches per call into Keras' train function under a mirrored strategy.

    A collective op inside Keras' in-graph step loop keeps one instance key for
    the whole call, and TensorFlow requires it to see the same shape on every
    iteration; the epoch's short last batch gives other per-replica shapes. So
    with a short batch the count is the largest divisor of the F full batches
    per epoch that is <= `requested`: Keras ends each call at the epoch's end,
    and the short batch then runs in a call of its own (F = 98 on Gowalla at
    B = 8192: 98 full batches in one call, then the short one).
    """
    full, tail = divmod(num_train, batch_size)
    if not tail or not full:
        return requested
    return max(d for d in range(1, min(requested, full) + 1) if full % d == 0)


class FitInput(NamedTuple):
    """What `model.compile` / `model.fit` take for one training phase."""
    dataset: Union[tf.data.Dataset, tf.distribute.DistributedDataset]
    steps_per_epoch: int         # train_step calls per epoch
    steps_per_execution: int     # train_step calls per call into the train function
    jit_compile: bool


def fit_input(strategy: tf.distribute.Strategy, data: Interactions, batch_size: int, seed: int,
              start_epoch: int, end_epoch: int, batches_per_chunk: int, jit_compile: bool,
              negatives: int = 1) -> FitInput:
    """The training input for epochs [start_epoch, end_epoch) under `strategy`.

    Default strategy: chunks of `batches_per_chunk` batches, looped inside the
    (XLA-compiled) train step. Mirrored strategies (`is_mirrored`): one global
    batch per train_step, sliced across replicas (`distribute_batches`), and
    Keras loops over `steps_per_execution(batches_per_chunk, ...)` of them per
    call. No XLA then: on CPU devices the compiled step cannot reach the other
    replicas' variable copies.
    """
    if not is_mirrored(strategy):
        return FitInput(training_dataset(data, batch_size, seed, start_epoch, end_epoch,
                                         batches_per_chunk=batches_per_chunk, negatives=negatives),
                        chunks_per_epoch(data.num_train, batch_size, batches_per_chunk), 1, jit_compile)
    dataset = training_dataset(data, batch_size, seed, start_epoch, end_epoch, negatives=negatives)
    return FitInput(distribute_batches(strategy, dataset), steps_per_epoch(data.num_train, batch_size),
                    steps_per_execution(batches_per_chunk, data.num_train, batch_size), False)
