"""In-graph replica maths for `tf.distribute` (a leaf: TensorFlow and `sparse` only).

Inside a train step under a strategy with R > 1 replicas: this replica's
share of the global batch (`global_batch_share`), all-reduce and all-gather
of logs and (id, value) pairs, and APR's per-row gradient sums over the
global batch. With one replica (the default strategy, ParameterServerStrategy
workers) every helper is the identity and adds no op to the graph. Strategy
creation and input live in `strategy.py` and `inputs.py`.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import tensorflow as tf

from tf_sharpcf.optim.sparse import sum_repeated_rows


def replica_context() -> Optional[tf.distribute.ReplicaContext]:
    """The replica context when there are several replicas, else None."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return None
    return context


def global_batch_share(rows: tf.Tensor) -> Optional[tf.Tensor]:
    """rows: any [b_r, ...] tensor of this replica's batch -> scalar float32
    b_r / B (its rows over the global batch's), or None with one replica.
    Σ_r share_r · mean_r is the global batch mean."""
    context = replica_context()
    if context is None:
        return None
    local = tf.cast(tf.shape(rows)[0], tf.float32)
    return local / context.all_reduce(tf.distribute.ReduceOp.SUM, local)


def sum_across_replicas(values):
    """All-reduce SUM of a nest of tensors (the identity with one replica)."""
    context = replica_context()
    if context is None:
        return values
    return context.all_reduce(tf.distribute.ReduceOp.SUM, values)


def gather_across_replicas(*tensors: tf.Tensor) -> Tuple[tf.Tensor, ...]:
    """Concatenates each tensor's per-replica values along axis 0 in replica
    order (the global batch's rows); the identity with one replica."""
    context = replica_context()
    if context is None:
        return tensors
    return tuple(context.all_gather(_on_replica_device(tensors), axis=0))


def _on_replica_device(tensors: Sequence[tf.Tensor]):
    """Copies made on this replica's device. `all_gather` sends each value to
    its tensor's device, and a tensor straight from the input iterator can
    carry none (MultiWorkerMirroredStrategy inside Keras' step loop)."""
    return [tf.identity(t) for t in tensors]


def sum_rows_over_global_batch(grads: tf.Tensor, ids: tf.Tensor, num_rows=None) -> tf.Tensor:
    """Gradient of the global batch loss w.r.t. each gathered table row.

    grads: [b, d] float32, this replica's gradients of its batch MEAN loss
    w.r.t. the rows it gathered; ids: [b] their table rows. Returns [b, d]: at
    each position, Σ (b_r/B)·grad over every position of every replica that
    holds the same row, i.e. ∂(global batch mean)/∂row. With one replica:
    `sum_repeated_rows(grads, ids, num_rows)`; num_rows, the table's row
    count, picks the faster owner-table segments there.
    """
    context = replica_context()
    if context is None:
        return sum_repeated_rows(grads, ids, num_rows)
    local = tf.shape(ids)[0]
    share = global_batch_share(ids)
    sizes, all_grads, all_ids = context.all_gather(
        _on_replica_device([local[None], share * grads, tf.reshape(ids, [-1])]), axis=0)
    summed = sum_repeated_rows(all_grads, all_ids, num_rows)
    replica = tf.cast(context.replica_id_in_sync_group, tf.int32)
    offset = tf.reduce_sum(tf.where(tf.range(tf.size(sizes)) < replica, sizes, 0))
    return summed[offset:offset + local]
