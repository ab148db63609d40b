"""The tf.data training pipeline: `(element_id, user, pos_item, neg_items)` batches.

Each epoch is a pure function of `(seed, epoch)`: the permutation of the
canonical training table and every negative are drawn with stateless random
ops keyed by `(seed, epoch, batch)`. The same seed therefore gives the same
batches on every run and machine, and a resumed run needs no RNG state.
"""
from __future__ import annotations

import math

import tensorflow as tf

from tf_sharpcf.data.interactions import Interactions

# Rejection sampling draws again only for the rows that hit a positive item;
# the bound guards against a user who has nearly every item (never reached on
# real data: each round shrinks the rejected set by the user's density).
_MAX_NEGATIVE_ROUNDS = 1000


def steps_per_epoch(num_train: int, batch_size: int) -> int:
    return int(math.ceil(num_train / batch_size))


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

    def __call__(self, users: tf.Tensor, seed: tf.Tensor, negatives: int = 1) -> tf.Tensor:
        """users: [B] int32, seed: [2] int64 -> [B, K] int32 negatives (K = `negatives`).

        Each of the B·K draws is uniform over the items its user has not
        interacted with, independently (a row may repeat an item). The draws
        are one stateless stream in row-major order, so column 0 at K = 1 is
        exactly the [B] draw of a one-negative sampler.
        """
        shape = tf.stack([tf.shape(users)[0], negatives])

        def draw(round_):
            s = tf.random.experimental.stateless_fold_in(seed, round_)
            return tf.random.stateless_uniform(shape, s, minval=0, maxval=self.num_items, dtype=tf.int32)

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


def epoch_permutation(num_train: int, seed: int, epoch) -> tf.Tensor:
    """[N] int32: the order of element ids in epoch `epoch` (stateless)."""
    key = tf.stack([tf.constant(seed, tf.int64), tf.cast(epoch, tf.int64)])
    return tf.random.experimental.stateless_shuffle(tf.range(num_train, dtype=tf.int32), seed=key)


def epoch_tables(data_tensors, sampler: "NegativeSampler", num_train: int, seed: int, epoch,
                 negatives: int = 1):
    """One epoch's interactions in training order.

    Returns (element_id, user, pos_item) as [N] int32 tensors and neg_items as
    [N, K] int32: the epoch's permutation of the canonical table and K
    negatives per row, all a pure function of (seed, epoch).
    """
    users, items = data_tensors
    ids = epoch_permutation(num_train, seed, epoch)
    u = tf.gather(users, ids)
    key = tf.stack([tf.constant(seed, tf.int64) + 7919, tf.cast(epoch, tf.int64)])
    return ids, u, tf.gather(items, ids), sampler(u, key, negatives)


def training_dataset(data: Interactions, batch_size: int, seed: int,
                     start_epoch: int = 0, end_epoch: int = 1,
                     batches_per_chunk: int = 0, negatives: int = 1) -> tf.data.Dataset:
    """Batches for epochs [start_epoch, end_epoch), epoch after epoch.

    With batches_per_chunk = 0, yields (element_id, user, pos_item, neg_items):
    three [B] int32 tensors and [B, K] int32 (K = `negatives`); the last batch
    of an epoch holds the N mod B remaining rows.
    `steps_per_epoch(N, B)` batches per epoch. element_id is the row of the
    interaction in `data`'s canonical table.

    With batches_per_chunk = k > 0, yields the same batches stacked k at a time
    as [k, B] tensors ([k, B, K] for neg_items; fewer in an epoch's last full
    chunk), then the short batch as [1, N mod B]; `chunks_per_epoch` gives the
    count. Both forms carry
    exactly the same batches in the same order.
    """
    n = data.num_train
    tensors = (tf.constant(data.train_users, tf.int32), tf.constant(data.train_items, tf.int32))
    sampler = NegativeSampler(data)
    full, tail = divmod(n, batch_size)

    k = batches_per_chunk or 1
    # (first batch, last batch + 1) of each [k, B] chunk, then the short batch.
    spans = [(lo, min(full, lo + k)) for lo in range(0, full, k)]

    def one_epoch(epoch):
        cols = epoch_tables(tensors, sampler, n, seed, epoch, negatives)

        def batches(c, count):      # [count·B, ...] -> [count, B, ...]
            return tf.reshape(c, [count, batch_size, *c.shape[1:]])

        if batches_per_chunk:
            pieces = [tf.data.Dataset.from_tensors(tuple(
                batches(c[lo * batch_size: hi * batch_size], hi - lo) for c in cols))
                for lo, hi in spans]
        else:
            pieces = [tf.data.Dataset.from_tensor_slices(tuple(
                batches(c[: full * batch_size], full) for c in cols))] if full else []
        if tail:
            short = tuple(c[full * batch_size:] for c in cols)
            pieces.append(tf.data.Dataset.from_tensors(
                tuple(s[None] for s in short) if batches_per_chunk else short))
        ds = pieces[0]
        for piece in pieces[1:]:
            ds = ds.concatenate(piece)
        return ds

    ds = tf.data.Dataset.range(start_epoch, end_epoch).flat_map(one_epoch)
    options = tf.data.Options()
    options.deterministic = True
    return ds.with_options(options).prefetch(2)


def chunks_per_epoch(num_train: int, batch_size: int, batches_per_chunk: int) -> int:
    full, tail = divmod(num_train, batch_size)
    return int(math.ceil(full / batches_per_chunk)) + (1 if tail else 0)


# ---------------------------------------------------------------------------
# A permutation computed element by element (for ParameterServerStrategy)

_FEISTEL_ROUNDS = 6
# murmur3's 32-bit finaliser; operands are masked to 31 bits before each
# multiply so that every product stays below 2**63 in int64.
_FEISTEL_MIX = ((0x85EBCA6B, 13), (0xC2B2AE35, 16))


def feistel_round_keys(seed: int, epoch) -> tf.Tensor:
    """[6] int64 round keys in [0, 2**31) for `index_permutation`, a pure
    function of (seed, epoch)."""
    key = tf.stack([tf.constant(seed, tf.int64) + 104729, tf.cast(epoch, tf.int64)])
    return tf.random.stateless_uniform([_FEISTEL_ROUNDS], key, minval=0, maxval=2 ** 31, dtype=tf.int64)


def feistel_half_bits(n: int) -> int:
    """h: the permutation works on [0, 2**(2h)) ⊇ [0, n), 2**(2h) < 4n + 4."""
    bits = max(2, (int(n) - 1).bit_length())
    return (bits + 1) // 2


def index_permutation(positions: tf.Tensor, n: int, round_keys: tf.Tensor) -> tf.Tensor:
    """[b] int64 positions in [0, n) -> [b] int64: where each position's
    element comes from in a pseudo-random permutation of [0, n).

    A 6-round Feistel network on 2h-bit integers (a bijection of
    [0, 2**(2h))), cycle-walked into [0, n): an output >= n is fed through the
    network again until it lands below n, which keeps it a bijection of
    [0, n) (Black & Rogaway's cycle walking; fewer than 4 passes on average).
    Unlike `epoch_permutation` nothing of size n is built: a batch's element
    ids cost O(b) however large n is, so a worker computes its own batch from
    (epoch, step) alone. Needs n <= 2**62 and every position in [0, n)
    (a position outside it would walk forever; `ShardedBatches` passes
    [sB, sB + b) ⊂ [0, n)). Each pass lands an element with probability
    > 1/4, so a batch of 8192 needs about 30 passes at worst, each a few
    integer ops per element.
    """
    n = int(n)
    if not 1 <= n <= 2 ** 62:
        raise ValueError(f"index_permutation needs 1 <= n <= 2**62, got {n}")
    h = feistel_half_bits(n)
    mask = tf.constant((1 << h) - 1, tf.int64)
    keys = tf.cast(round_keys, tf.int64)

    def mix(right, key):          # [b] h-bit values -> [b] h-bit hashes (murmur3's finaliser)
        t = tf.bitwise.bitwise_and(tf.bitwise.bitwise_xor(right, key), 0x7FFFFFFF)
        for multiplier, shift in _FEISTEL_MIX:
            t = tf.bitwise.bitwise_and(tf.bitwise.bitwise_and(t, 0x7FFFFFFF) * multiplier, 0xFFFFFFFF)
            t = tf.bitwise.bitwise_xor(t, tf.bitwise.right_shift(t, shift))
        return tf.bitwise.bitwise_and(t, mask)

    def network(x):
        left, right = tf.bitwise.right_shift(x, h), tf.bitwise.bitwise_and(x, mask)
        for r in range(_FEISTEL_ROUNDS):
            left, right = right, tf.bitwise.bitwise_xor(left, mix(right, keys[r]))
        return tf.bitwise.bitwise_or(tf.bitwise.left_shift(left, h), right)

    def walk(_, x):
        x = tf.where(x >= n, network(x), x)
        return tf.reduce_any(x >= n), x

    x = network(tf.cast(positions, tf.int64))
    _, x = tf.while_loop(lambda again, _: again, walk, (tf.reduce_any(x >= n), x))
    return x
