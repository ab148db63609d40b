"""Dynamic negative sampling (the `dns` sampler): of the M candidates drawn
for each negative, the step keeps the one the model scores highest now.

The pipeline draws [B, K·M] uniform candidates (`samplers.pool`); before
the objective sees the batch, `hardest_of` picks [B, K] of them with the
current tables, outside the gradient. The objective then trains on those K
as on any negatives, so every loss and method works with it.
"""
from __future__ import annotations

import tensorflow as tf

from tf_sharpcf.optim.sparse import gather_rows


def hardest_of(user_rows: tf.Tensor, item_table, candidates: tf.Tensor, pool: int,
               cosine: bool = False) -> tf.Tensor:
    """user_rows [B, d], item_table [N, d] (a variable or tensor), candidates
    [B, K·M] int32, pool = M -> [B, K] int32: for each k, the candidate of
    columns [k·M, (k + 1)·M) with the highest score user_row · item_row (item
    rows normalised when `cosine`: the same order as the cosine's), the first
    of equal ones. M = 1 returns `candidates`."""
    if pool == 1:
        return candidates
    batch = tf.shape(candidates)[0]
    k = candidates.shape[1] // pool if candidates.shape[1] is not None else -1     # static K where known
    rows = tf.stop_gradient(gather_rows(item_table, candidates))                   # [B, K·M, d]
    if cosine:
        rows = tf.math.l2_normalize(rows, axis=2)
    scores = tf.einsum("bd,bcd->bc", tf.stop_gradient(user_rows), rows)
    scores = tf.reshape(scores, [batch, k, pool])                                   # [B, K, M]
    pick = tf.argmax(scores, axis=2, output_type=tf.int32)                          # [B, K]
    return tf.gather(tf.reshape(candidates, [batch, k, pool]), pick, batch_dims=2)
