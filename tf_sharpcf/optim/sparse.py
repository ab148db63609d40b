"""Row-sparse helpers with static shapes, so they compile under XLA.

`tf.unique` has a data-dependent output size and no XLA kernel; summing the
gradients of repeated rows is done instead with a segment sum into B segments
(B = batch rows), and the per-row sum is gathered back to every position that
holds that row. The segments are numbered by an owner table (each row's first
position, a scatter-min into the table's row count) when that count is known,
else by a sort. The owner table is the faster of the two under XLA on CPU
(XLA's CPU sort calls a comparator per pair; README, Benchmarks: design
measurements), and both give identical sums.
"""
from __future__ import annotations

import tensorflow as tf
from tensorflow.python.distribute.sharded_variable import ShardedVariable


def is_sharded(table) -> bool:
    """True for a `ShardedVariable` (a table split by rows across parameter servers)."""
    return isinstance(table, ShardedVariable)


def table_value(table):
    """A table as one tensor: a `ShardedVariable`'s shards concatenated; any
    other variable or tensor as it is."""
    return tf.convert_to_tensor(table) if isinstance(table, ShardedVariable) else table


def gather_rows(table, ids: tf.Tensor) -> tf.Tensor:
    """`tf.gather(table, ids)` for a variable, a tensor or a `ShardedVariable`
    (ParameterServerStrategy): for the latter, `tf.nn.embedding_lookup`,
    which reads the rows from the shards that hold them; `tf.gather` would
    first concatenate every shard into one full table."""
    if isinstance(table, ShardedVariable):
        return tf.nn.embedding_lookup(table, ids)
    return tf.gather(table, ids)


def row_segments(ids: tf.Tensor) -> tf.Tensor:
    """[B] int row ids -> [B] int32 segment index, equal exactly where ids are equal.

    Segments are numbered 0..U-1 in ascending id order (U = distinct ids).
    """
    ids = tf.reshape(ids, [-1])
    order = tf.argsort(ids, stable=True)
    sorted_ids = tf.gather(ids, order)
    is_new = tf.concat([tf.ones([1], tf.int32),
                        tf.cast(sorted_ids[1:] != sorted_ids[:-1], tf.int32)], axis=0)
    seg_sorted = tf.cumsum(is_new) - 1
    # seg[order[k]] = seg_sorted[k]
    return tf.tensor_scatter_nd_update(tf.zeros_like(seg_sorted), order[:, None], seg_sorted)


def owner_segments(ids: tf.Tensor, num_rows: int) -> tf.Tensor:
    """[B] int row ids in [0, num_rows) -> [B] int32 segment index in [0, B):
    the first position holding the same id, equal exactly where ids are equal."""
    ids = tf.reshape(ids, [-1])
    positions = tf.range(tf.shape(ids)[0], dtype=tf.int32)
    return tf.gather(tf.math.unsorted_segment_min(positions, ids, num_rows), ids)


def sum_repeated_rows(values: tf.Tensor, ids: tf.Tensor, num_rows=None) -> tf.Tensor:
    """values [B, d], ids [B] -> [B, d]: at each position, the sum of the values
    of every position with the same id (the gradient w.r.t. that table row).

    num_rows: the table's row count (ids in [0, num_rows)), for the owner-table
    segments; None: segments by a sort."""
    seg = row_segments(ids) if num_rows is None else owner_segments(ids, num_rows)
    summed = tf.math.unsorted_segment_sum(values, seg, tf.shape(seg)[0])
    return tf.gather(summed, seg)
