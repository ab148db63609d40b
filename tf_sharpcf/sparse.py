"""Row-sparse helpers with static shapes, so they compile under XLA.

`tf.unique` has a data-dependent output size and no XLA kernel; summing the
gradients of repeated rows is done instead with a sort and a segment sum into
B segments (B = batch rows), and the per-row sum is gathered back to every
position that holds that row.
"""
from __future__ import annotations

import tensorflow as tf


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


def sum_repeated_rows(values: tf.Tensor, ids: tf.Tensor) -> tf.Tensor:
    """values [B, d], ids [B] -> [B, d]: at each position, the sum of the values
    of every position with the same id (the gradient w.r.t. that table row)."""
    seg = row_segments(ids)
    summed = tf.math.unsorted_segment_sum(values, seg, tf.shape(seg)[0])
    return tf.gather(summed, seg)
