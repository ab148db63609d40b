"""The tf.data training pipeline: `(element_id, user, pos_item, neg_items)` batches.

Each epoch is a pure function of `(seed, epoch)`: the permutation of the
canonical training table and every negative are drawn with stateless random
ops keyed by `(seed, epoch, batch)`. The same seed therefore gives the same
batches on every run and machine, and a resumed run needs no RNG state.
"""
from __future__ import annotations

import math
from typing import Optional

import tensorflow as tf

from tf_sharpcf.data.interactions import Interactions
from tf_sharpcf.data.negatives import NegativeSampler, negative_key  # noqa: F401 (NegativeSampler: re-exported)


def steps_per_epoch(num_train: int, batch_size: int, first_batch: int = 0) -> int:
    """Batches in an epoch (from its batch `first_batch` on, see `training_dataset`)."""
    return int(math.ceil(num_train / batch_size)) - first_batch


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
    return ids, u, tf.gather(items, ids), sampler(u, negative_key(seed, epoch), negatives)


def training_dataset(data: Interactions, batch_size: int, seed: int,
                     start_epoch: int = 0, end_epoch: int = 1,
                     batches_per_chunk: int = 0, negatives: int = 1, first_batch: int = 0,
                     sampler: Optional[NegativeSampler] = None) -> tf.data.Dataset:
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

    sampler: draws the K negatives (`samplers.make_sampler`); None: uniform.

    first_batch = b > 0: epoch `start_epoch` begins at its batch b (0-based),
    the ones before it left out (a run stopped mid-epoch trained them,
    `training/preemption.py`); its chunks are then batches [b, b + k), ...;
    later epochs are whole.
    """
    n = data.num_train
    tensors = (tf.constant(data.train_users, tf.int32), tf.constant(data.train_items, tf.int32))
    sampler = sampler if sampler is not None else NegativeSampler(data)
    full, tail = divmod(n, batch_size)
    if not 0 <= first_batch < full + (1 if tail else 0):
        raise ValueError(f"first_batch {first_batch} is not a batch of an epoch of {n} rows in batches of "
                         f"{batch_size}")
    k = batches_per_chunk or 1

    def one_epoch(epoch, first=0):
        cols = epoch_tables(tensors, sampler, n, seed, epoch, negatives)
        # (first batch, last batch + 1) of each [k, B] chunk, then the short batch.
        spans = [(lo, min(full, lo + k)) for lo in range(first, full, k)]

        def batches(c, count):      # [count·B, ...] -> [count, B, ...]
            return tf.reshape(c, [count, batch_size, *c.shape[1:]])

        if batches_per_chunk:
            pieces = [tf.data.Dataset.from_tensors(tuple(
                batches(c[lo * batch_size: hi * batch_size], hi - lo) for c in cols))
                for lo, hi in spans]
        else:
            pieces = [tf.data.Dataset.from_tensor_slices(tuple(
                batches(c[first * batch_size: full * batch_size], full - first) for c in cols))] \
                if full > first else []
        if tail:
            short = tuple(c[full * batch_size:] for c in cols)
            pieces.append(tf.data.Dataset.from_tensors(
                tuple(s[None] for s in short) if batches_per_chunk else short))
        ds = pieces[0]
        for piece in pieces[1:]:
            ds = ds.concatenate(piece)
        return ds

    if first_batch:
        ds = tf.data.Dataset.range(start_epoch, start_epoch + 1).flat_map(lambda e: one_epoch(e, first_batch))
        if end_epoch > start_epoch + 1:
            ds = ds.concatenate(tf.data.Dataset.range(start_epoch + 1, end_epoch).flat_map(one_epoch))
    else:
        ds = tf.data.Dataset.range(start_epoch, end_epoch).flat_map(one_epoch)
    options = tf.data.Options()
    options.deterministic = True
    return ds.with_options(options).prefetch(2)


def chunks_per_epoch(num_train: int, batch_size: int, batches_per_chunk: int, first_batch: int = 0) -> int:
    """[k, B] chunks (and the short batch) in an epoch, from its batch `first_batch` on."""
    full, tail = divmod(num_train, batch_size)
    return int(math.ceil(max(0, full - first_batch) / batches_per_chunk)) + (1 if tail else 0)


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
