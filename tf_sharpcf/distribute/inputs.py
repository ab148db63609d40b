"""Input for `tf.distribute`: a global batch cut into per-replica slices, and
the (dataset, steps) pair `fit` gets for a strategy.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence, Union

import tensorflow as tf

from tf_sharpcf.data.interactions import Interactions
from tf_sharpcf.data.input_pipeline import chunks_per_epoch, steps_per_epoch, training_dataset
from tf_sharpcf.distribute.strategy import is_mirrored


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
              negatives: int = 1, first_batch: int = 0, sampler=None) -> FitInput:
    """The training input for epochs [start_epoch, end_epoch) under `strategy`,
    the first from its batch `first_batch` on (`training_dataset`; `fit` then
    runs that epoch alone: its steps are fewer), `negatives` per positive
    drawn by `sampler` (`samplers.make_sampler`; None: uniform).

    Default strategy: chunks of `batches_per_chunk` batches, looped inside the
    (XLA-compiled) train step. Mirrored strategies (`is_mirrored`): one global
    batch per train_step, sliced across replicas (`distribute_batches`), and
    Keras loops over `steps_per_execution(batches_per_chunk, ...)` of them per
    call. No XLA then: on CPU devices the compiled step cannot reach the other
    replicas' variable copies.
    """
    if not is_mirrored(strategy):
        return FitInput(training_dataset(data, batch_size, seed, start_epoch, end_epoch,
                                         batches_per_chunk=batches_per_chunk, negatives=negatives,
                                         first_batch=first_batch, sampler=sampler),
                        chunks_per_epoch(data.num_train, batch_size, batches_per_chunk, first_batch), 1,
                        jit_compile)
    dataset = training_dataset(data, batch_size, seed, start_epoch, end_epoch, negatives=negatives,
                               first_batch=first_batch, sampler=sampler)
    return FitInput(distribute_batches(strategy, dataset), steps_per_epoch(data.num_train, batch_size, first_batch),
                    steps_per_execution(batches_per_chunk, data.num_train, batch_size), False)
