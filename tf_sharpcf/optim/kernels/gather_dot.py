"""`gather_dot`: B rows scored against C table rows each, without a [B, C, d] tensor.

The fused kernel (`gather_dot.cc`, `kernels.gather_dot_op()`) and its
registered gradient: the table's gradient is `tf.IndexedSlices` over the
distinct ids (one summed row each, accumulated item-major), the rows'
gradient a dense [B, d]. A resource variable as the table is read in place
(`SharpcfResourceGatherDot`), which spares the optimizer a copy of the whole
variable at its next in-place update. `reference` is the plain TensorFlow formula with the
same outputs, used where the kernel is unavailable and by the tests.
"""
from __future__ import annotations

from typing import NamedTuple

import tensorflow as tf
from tensorflow.python.eager import tape as tape_lib

_REGISTERED = []


class GatherDot(NamedTuple):
    scores: tf.Tensor      # [B, C] float32: rows[b] · table[ids[b, c]]
    sq_norms: tf.Tensor    # [B, C] float32: ‖table[ids[b, c]]‖²
    unique: tf.Tensor      # [M] int32: the distinct ids, ascending
    inverse: tf.Tensor     # [B, C] int32: unique[inverse[b, c]] == ids[b, c]


def register_gradient(library) -> None:
    """Registers the gradients of SharpcfGatherDot and SharpcfResourceGatherDot once per process."""
    if _REGISTERED:
        return
    def gradient(op, g_scores, g_sq, *_):
        if g_scores is None:
            g_scores = tf.zeros_like(op.outputs[0])
        if g_sq is None:
            g_sq = tf.zeros_like(op.outputs[1])
        table = op.inputs[1]
        grad_op = (library.sharpcf_resource_gather_dot_grad if table.dtype == tf.resource
                   else library.sharpcf_gather_dot_grad)
        unique, offsets, pairs, inverse = op.outputs[2], op.outputs[3], op.outputs[4], op.outputs[5]
        g_rows, g_values = grad_op(op.inputs[0], table, unique, offsets, pairs, inverse, g_scores, g_sq)
        if table.dtype == tf.resource:
            dense_shape = tf.raw_ops.VariableShape(input=table, out_type=tf.int64)
        elif table.shape.is_fully_defined():
            dense_shape = tf.constant(table.shape.as_list(), tf.int64)
        else:
            dense_shape = tf.shape(table, out_type=tf.int64)
        return [g_rows, tf.IndexedSlices(g_values, unique, dense_shape), None]

    tf.RegisterGradient("SharpcfGatherDot")(gradient)
    tf.RegisterGradient("SharpcfResourceGatherDot")(gradient)
    _REGISTERED.append(library)


def fused(op, rows: tf.Tensor, table, ids: tf.Tensor) -> GatherDot:
    """The kernel's outputs. rows [B, d], table [N, d] (a tensor, or a resource
    variable, read in place by `op.resource`), ids [B, C] int32.

    With a variable, the backward pass reads the variable again, as it is
    then: update it only after the gradient is taken (as an optimizer step
    does), or pass a tensor read of it instead."""
    ids = tf.cast(ids, tf.int32)
    if isinstance(table, tf.Variable):
        if table.trainable:
            tape_lib.variable_accessed(table)   # so that tapes differentiate w.r.t. it, as tf.Variable does
        out = op.resource(rows, table.handle, ids)
    else:
        out = op.tensor(rows, table, ids)
    scores, sq_norms, unique, _, _, inverse = out
    return GatherDot(scores, sq_norms, unique, inverse)


class Ops(NamedTuple):
    """The library's ops (`kernels.gather_dot_op()`)."""
    tensor: object         # SharpcfGatherDot(rows, table tensor, ids)
    resource: object       # SharpcfResourceGatherDot(rows, table variable handle, ids)
    resource_grad: object  # SharpcfResourceGatherDotGrad(rows, handle, unique, offsets, pairs, inverse,
                           #                              g_scores, g_sq)

    def __call__(self, rows, table, ids):
        return self.tensor(rows, table, ids)


def reference(rows: tf.Tensor, table: tf.Tensor, ids: tf.Tensor) -> GatherDot:
    """The same outputs from gathers: builds the [B, C, d] tensor the kernel avoids."""
    ids = tf.cast(ids, tf.int32)
    gathered = tf.gather(table, ids)                                  # [B, C, d]
    scores = tf.reduce_sum(rows[:, None, :] * gathered, axis=2)
    sq_norms = tf.reduce_sum(tf.square(gathered), axis=2)
    unique, flat_inverse = tf.unique(tf.reshape(ids, [-1]))
    order = tf.argsort(unique)
    rank = tf.math.invert_permutation(order)
    inverse = tf.reshape(tf.gather(rank, flat_inverse), tf.shape(ids))
    return GatherDot(scores, sq_norms, tf.gather(unique, order), inverse)
