"""Negative samplers of the input pipeline: K negatives per positive, drawn
from a stateless stream keyed by (seed, epoch), never a training positive.

Which `--sampler` builds which is `tf_sharpcf/samplers.py`'s. `NegativeSampler`
draws uniformly; `PopularitySampler` in proportion to (training count)^β.
Both redraw, position by position, the draws that hit one of the user's
training items (rejection sampling), so a negative is never a positive.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from tf_sharpcf.data.interactions import Interactions

# Rejection sampling draws again only for the rows that hit a positive item;
# the bound guards against a user who has nearly every item (never reached on
# real data: each round shrinks the rejected set by the user's density).
_MAX_NEGATIVE_ROUNDS = 1000
# The negatives' stream is keyed by (seed + this, epoch): apart from the
# permutation's (seed, epoch) and the Feistel keys' (seed + 104729, epoch).
_NEGATIVE_SEED_OFFSET = 7919


def negative_key(seed, epoch) -> tf.Tensor:
    """[2] int64: the key of epoch `epoch`'s negatives (`NegativeSampler.__call__`)."""
    return tf.stack([tf.cast(seed, tf.int64) + _NEGATIVE_SEED_OFFSET, tf.cast(epoch, tf.int64)])


class NegativeSampler:
    """Uniform negatives among the items a user has not interacted with in train.

    Membership of `user * num_items + item` in the sorted training keys is
    tested by the `SharpcfIsPositive` CPU kernel (`optim/kernels/negatives.cc`:
    a binary search in the row's user slice, cheap at K in the hundreds) or,
    where it is unavailable or `kernel=False`, by a hash-table lookup (much
    faster than `tf.searchsorted` over all keys on CPU; docs/benchmarks.md).
    Both give the same answers, so the same negatives.
    """

    def __init__(self, data: Interactions, kernel=None):
        self.num_items = int(data.num_items)
        keys = data.train_keys()
        op = None
        if kernel is not False:
            from tf_sharpcf.optim import kernels
            op = kernels.is_positive_op()
        self._op = op
        if op is not None:
            self.keys = tf.constant(keys, tf.int64)
            self.table = None
        else:
            keys = tf.constant(keys, tf.int64)
            self.table = tf.lookup.StaticHashTable(
                tf.lookup.KeyValueTensorInitializer(keys, tf.ones_like(keys, tf.int32)), default_value=0)

    def is_positive(self, users: tf.Tensor, items: tf.Tensor) -> tf.Tensor:
        """users: [B] int32, items: [B] or [B, K] int32 -> bool of items' shape,
        True where (user, item) is in train."""
        if self._op is not None:
            return self._op(tf.cast(users, tf.int32), tf.cast(items, tf.int32), self.keys,
                            tf.constant(self.num_items, tf.int64))
        users = tf.cast(users, tf.int64)
        if items.shape.rank == 2:
            users = users[:, None]
        query = users * self.num_items + tf.cast(items, tf.int64)
        return tf.cast(self.table.lookup(query), tf.bool)

    def draw(self, shape: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        """shape [2], seed [2] int64 -> int32 items of `shape`, before rejection."""
        return tf.random.stateless_uniform(shape, seed, minval=0, maxval=self.num_items, dtype=tf.int32)

    def __call__(self, users: tf.Tensor, seed: tf.Tensor, negatives: int = 1) -> tf.Tensor:
        """users: [B] int32, seed: [2] int64 -> [B, K] int32 negatives (K = `negatives`).

        Each of the B·K draws is independent and follows `draw`'s distribution
        restricted to the items its user has not interacted with (a row may
        repeat an item). The draws are one stateless stream in row-major
        order, so column 0 at K = 1 is exactly the [B] draw of a one-negative
        sampler.
        """
        shape = tf.stack([tf.shape(users)[0], negatives])

        def draw(round_):
            return self.draw(shape, tf.random.experimental.stateless_fold_in(seed, round_))

        negs = draw(0)
        # Round r replaces the draws that are still positives with round r's
        # draws at the same positions; only those few are tested again.
        bad = tf.where(self.is_positive(users, negs))           # [m, 2] positions

        def cond(r, negs, bad):
            return tf.logical_and(tf.shape(bad)[0] > 0, r < _MAX_NEGATIVE_ROUNDS)

        def body(r, negs, bad):
            redrawn = tf.gather_nd(draw(r), bad)
            negs = tf.tensor_scatter_nd_update(negs, bad, redrawn)
            still = self.is_positive(tf.gather(users, bad[:, 0]), redrawn)
            return r + 1, negs, tf.boolean_mask(bad, still)

        _, negs, _ = tf.while_loop(cond, body, (tf.constant(1), negs, bad),
                                   shape_invariants=(tf.TensorShape([]), negs.shape, tf.TensorShape([None, 2])))
        return negs


def popularity_cdf(train_items: np.ndarray, num_items: int, beta: float) -> np.ndarray:
    """[num_items] float64: the cumulative sums of count_i^β, count_i item i's
    training interactions (0^β = 0 for β > 0: an item never trained on is never
    drawn; β = 0: every item weighs 1)."""
    counts = np.bincount(np.asarray(train_items, np.int64), minlength=num_items).astype(np.float64)
    weights = np.power(counts, beta) if beta > 0 else np.ones_like(counts)
    return np.cumsum(weights)


class PopularitySampler(NegativeSampler):
    """Negatives drawn ∝ (training count)^β (`popularity_cdf`), by inverse
    transform: a float64 uniform in [0, total) located in the cumulative sums."""

    def __init__(self, data: Interactions, beta: float, kernel=None):
        super().__init__(data, kernel=kernel)
        if not (np.isfinite(beta) and beta >= 0):
            raise ValueError(f"the popularity sampler's beta must be a finite number >= 0, got {beta!r}")
        self.beta = float(beta)
        cdf = popularity_cdf(data.train_items, self.num_items, self.beta)
        self.cdf, self.total = tf.constant(cdf, tf.float64), float(cdf[-1])

    def draw(self, shape: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        u = tf.random.stateless_uniform(shape, seed, minval=0.0, maxval=self.total, dtype=tf.float64)
        flat = tf.searchsorted(self.cdf, tf.reshape(u, [-1]), side="right")
        return tf.reshape(tf.cast(tf.minimum(flat, self.num_items - 1), tf.int32), shape)
