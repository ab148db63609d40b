"""The item side of a step: the positive and negative scores an objective trains on.

An objective asks `step.items.evaluate(user_rows)` for the batch's scores,
`sq_sums()` for the items' L2 terms, and APR asks `perturbed(...)` for the
scores at rows moved by Δ. Two implementations of that one contract:

* `GatheredItems`: the positive rows [B, d] and the negative rows [B, K, d]
  gathered by the model (plain TensorFlow; compiles under XLA). BPR's and
  SharpCF's graph of old, bit for bit; APR's within float rounding (2e-8).
* `FusedItems`: the fused K-negative kernel (`optim/kernels/gather_dot.cc`)
  over the item table and the ids [B, 1 + K], column 0 the positive. No
  [B, K, d] tensor is built, forward or backward: each distinct item row is
  read once per pass and its gradient is one summed row (`tf.IndexedSlices`
  over the distinct ids). It runs outside XLA.
* `ScoredItems`: scores the kernel computed before the objective ran, for an
  objective that scores once, at `step.user_emb` (`Objective.scores_once`):
  the model then runs the objective and its gradient w.r.t. the scores under
  XLA, between the kernel's forward and backward passes.

`CosineItems` wraps any of them for `--similarity cosine`: the same contract,
scores divided by the rows' norms (`item_sq_norms`, the fourth method of the
contract), L2 terms the raw rows'.

`SharedItems` is the `shared` sampler's item side: one pool of N negatives
per batch, scored by every row in one [B, d] x [d, N] matmul (cosine on
normalised rows itself); a row's own positive in the pool is masked.
"""
from __future__ import annotations

from typing import Callable, List, NamedTuple, Optional, Sequence

import tensorflow as tf

from tf_sharpcf.objectives.losses import cosine
from tf_sharpcf.optim.kernels.gather_dot import fused

# perturb(grads [n, d], ids [n]) -> Δ [n, d]: APR's per-row step (apr.py)
Perturb = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]


class ItemScores(NamedTuple):
    pos: tf.Tensor              # [B] ŷ_ui
    neg: tf.Tensor              # [B, K] ŷ_uj ([B] on the gathered K = 1 graph)


def dot(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    """Row-wise dot product (Eq. 2): [B, d], [B, d] -> [B]; [B, d], [B, K, d] -> [B, K]."""
    if len(b.shape) == 3:
        return tf.reduce_sum(a[:, None, :] * b, axis=2)
    return tf.reduce_sum(a * b, axis=1)


def pair_ids(pos_items: tf.Tensor, neg_items: tf.Tensor) -> tf.Tensor:
    """[B] positives, [B, K] negatives -> [B, 1 + K] int32, column 0 the positive."""
    return tf.concat([tf.cast(pos_items[:, None], tf.int32), tf.cast(neg_items, tf.int32)], 1)


def _split_sq_sums(sq_norms: tf.Tensor) -> List[tf.Tensor]:
    """[B, 1 + K] squared norms -> [Σ positive, Σ negatives / K] (`sq_sums`)."""
    k = tf.cast(tf.shape(sq_norms)[1] - 1, tf.float32)
    return [tf.reduce_sum(sq_norms[:, 0]), tf.reduce_sum(sq_norms[:, 1:]) / k]


def negative_sq_sum(neg_emb: tf.Tensor) -> tf.Tensor:
    """Σ ‖e_jk‖² over the batch, divided by K for [B, K, d] ([B, d]: K = 1)."""
    if len(neg_emb.shape) == 2:
        return tf.reduce_sum(tf.square(neg_emb))
    return tf.reduce_sum(tf.square(neg_emb)) / tf.cast(tf.shape(neg_emb)[1], tf.float32)


class GatheredItems:
    """Scores from gathered rows: pos_emb [B, d], neg_emb [B, K, d] or [B, d]."""

    def __init__(self, pos_emb: tf.Tensor, neg_emb: tf.Tensor, pos_items=None, neg_items=None):
        self.pos_emb, self.neg_emb = pos_emb, neg_emb
        self.pos_items, self.neg_items = pos_items, neg_items

    def evaluate(self, user_rows: tf.Tensor) -> ItemScores:
        return ItemScores(dot(user_rows, self.pos_emb), dot(user_rows, self.neg_emb))

    def sq_sums(self) -> List[tf.Tensor]:
        """[Σ_b ‖e_i‖², Σ_b Σ_k ‖e_jk‖² / K]: `base.l2_penalty`'s item terms."""
        return [tf.reduce_sum(tf.square(self.pos_emb)), negative_sq_sum(self.neg_emb)]

    def item_sq_norms(self) -> ItemScores:
        """‖e_i‖² [B] and ‖e_jk‖² [B, K] ([B] for K = 1) of the rows `evaluate` scores."""
        return ItemScores(tf.reduce_sum(tf.square(self.pos_emb), -1), tf.reduce_sum(tf.square(self.neg_emb), -1))

    def watched(self) -> Sequence[tf.Tensor]:
        """What an inner tape differentiates to get the items' row gradients."""
        return [self.pos_emb, self.neg_emb]

    def perturbed(self, grads: Sequence[tf.Tensor], perturb: Perturb) -> "GatheredItems":
        """The rows moved by Δ = perturb(row grads, ids), the positive and
        all B·K negative rows as one item table (repeated rows summed)."""
        gi, gj = grads
        batch, dim = tf.shape(self.pos_emb)[0], tf.shape(self.pos_emb)[1]
        delta = perturb(tf.concat([gi, tf.reshape(gj, [-1, dim])], 0),
                        tf.concat([self.pos_items, tf.reshape(self.neg_items, [-1])], 0))
        di, dj = delta[:batch], tf.reshape(delta[batch:], tf.shape(self.neg_emb))
        return GatheredItems(self.pos_emb + di, self.neg_emb + dj)


class FusedItems:
    """Scores from the fused kernel `op` over `table` [N, d] and the ids.

    ids [B, 1 + K] (`pair_ids`); `delta` (internal, from `perturbed`):
    ([M, d] Δ rows, [B, 1 + K] their index per pair) added to the item rows.
    """

    def __init__(self, op, table: tf.Tensor, ids: tf.Tensor, delta: Optional[tuple] = None):
        self.op, self.table, self.ids, self.delta = op, table, ids, delta
        self._clean = None

    def evaluate(self, user_rows: tf.Tensor) -> ItemScores:
        out = fused(self.op, user_rows, self.table, self.ids)
        if self._clean is None:
            self._clean = out
        scores = out.scores
        if self.delta is not None:
            rows, index = self.delta
            scores = scores + fused(self.op, user_rows, rows, index).scores
        return ItemScores(scores[:, 0], scores[:, 1:])

    def sq_sums(self) -> List[tf.Tensor]:
        """The item L2 terms of the first `evaluate`'s rows (the kernel's sq_norms)."""
        if self._clean is None:
            raise ValueError("sq_sums() needs the scores of an evaluate() first")
        return _split_sq_sums(self._clean.sq_norms)

    def item_sq_norms(self) -> ItemScores:
        """The kernel's squared norms of the scored rows; not for perturbed rows
        (the model keeps an objective that scores those on the gathered path)."""
        if self._clean is None or self.delta is not None:
            raise ValueError("item_sq_norms() needs the unperturbed scores of an evaluate() first")
        return ItemScores(self._clean.sq_norms[:, 0], self._clean.sq_norms[:, 1:])

    def watched(self) -> Sequence[tf.Tensor]:
        return [self.table]

    def perturbed(self, grads: Sequence[tf.Tensor], perturb: Perturb) -> "FusedItems":
        """grads: [IndexedSlices over the distinct ids of the last `evaluate`];
        Δ per distinct item row, added to every pair that holds it."""
        (g,) = grads
        if self._clean is None:
            raise ValueError("perturbed() needs the scores of an evaluate() first")
        if isinstance(g, tf.IndexedSlices):
            # One evaluate() in the tape: its gradient is one row per distinct id, in `unique` order.
            tf.debugging.assert_equal(tf.shape(g.indices), tf.shape(self._clean.unique),
                                      message="the table was scored more than once in the tape")
            values = tf.convert_to_tensor(g.values)
        else:
            values = tf.gather(tf.convert_to_tensor(g), self._clean.unique)
        delta = perturb(values, self._clean.unique)
        return FusedItems(self.op, self.table, self.ids, delta=(tf.stop_gradient(delta), self._clean.inverse))


class ScoredItems:
    """Given scores [B, 1 + K] (column 0 the positive) and squared norms, both
    computed at `user_rows` [B, d]; `evaluate` accepts only those rows."""

    def __init__(self, scores: tf.Tensor, sq_norms: tf.Tensor, user_rows: tf.Tensor):
        self.scores, self.sq_norms, self.user_rows = scores, sq_norms, user_rows

    def evaluate(self, user_rows: tf.Tensor) -> ItemScores:
        if user_rows is not self.user_rows:
            raise ValueError("these scores were computed at step.user_emb only: an objective that "
                             "scores other rows must set scores_once = False")
        return ItemScores(self.scores[:, 0], self.scores[:, 1:])

    def sq_sums(self) -> List[tf.Tensor]:
        return _split_sq_sums(self.sq_norms)

    def item_sq_norms(self) -> ItemScores:
        return ItemScores(self.sq_norms[:, 0], self.sq_norms[:, 1:])


class CosineItems:
    """`inner`'s scores as cosine similarities, ŷ_ui = e_u·e_i / (‖e_u‖ ‖e_i‖);
    its L2 terms (`sq_sums`) and everything else as `inner`'s."""

    def __init__(self, inner):
        self.inner = inner

    def evaluate(self, user_rows: tf.Tensor) -> ItemScores:
        pos, neg = self.inner.evaluate(user_rows)
        pos_sq, neg_sq = self.inner.item_sq_norms()
        user_sq = tf.reduce_sum(tf.square(user_rows), 1)
        return ItemScores(cosine(pos, user_sq, pos_sq), cosine(neg, user_sq, neg_sq))

    def sq_sums(self) -> List[tf.Tensor]:
        return self.inner.sq_sums()

    def item_sq_norms(self) -> ItemScores:
        return self.inner.item_sq_norms()

    def watched(self) -> Sequence[tf.Tensor]:
        return self.inner.watched()

    def perturbed(self, grads: Sequence[tf.Tensor], perturb: Perturb) -> "CosineItems":
        return CosineItems(self.inner.perturbed(grads, perturb))


# A masked score: far below any dot or cosine score, so that every loss on
# scores gives the entry no weight and no gradient (softplus(-1e9 - x) = 0,
# e^(-1e9/τ) = 0, and the max of a row skips it), and finite, so 0 · it is 0.
MASKED_SCORE = -1e9


def shared_scores(user_rows: tf.Tensor, pos_rows: tf.Tensor, pool_rows: tf.Tensor, pos_items: tf.Tensor,
                  pool_items: tf.Tensor) -> ItemScores:
    """user_rows, pos_rows [B, d]; pool_rows [N, d] -> ItemScores([B] e_u·e_i,
    [B, N] e_u·e_n), with MASKED_SCORE where pool item n is row b's positive
    (TFRS's `remove_accidental_hits`). pos_items [B], pool_items [N] int."""
    hits = tf.equal(tf.cast(pos_items, tf.int32)[:, None], tf.cast(pool_items, tf.int32)[None, :])
    neg = tf.matmul(user_rows, pool_rows, transpose_b=True)
    return ItemScores(dot(user_rows, pos_rows), tf.where(hits, tf.constant(MASKED_SCORE, neg.dtype), neg))


def _unit(rows: tf.Tensor) -> tf.Tensor:
    """Rows divided by their norms, a zero row left 0 (as `losses.cosine`)."""
    return rows * tf.math.rsqrt(tf.maximum(tf.reduce_sum(tf.square(rows), -1, keepdims=True), 1e-24))


class SharedItems:
    """Scores against one pool of negatives shared by the batch (`--sampler shared`).

    pos_emb [B, d], pool_emb [N, d] gathered rows; pos_items [B], pool_items
    [N] their ids. cosine: score normalised rows (then no `CosineItems`).
    Every row's N negative scores are one matmul, and its gradient two: the
    cost of a step is B·N·d multiply-adds of dense arithmetic, not B·N row
    gathers. The L2 terms count the pool as each row's negatives:
    Σ_b (1/N) Σ_n ‖e_n‖² = (B/N) Σ_n ‖e_n‖².
    """

    def __init__(self, pos_emb: tf.Tensor, pool_emb: tf.Tensor, pos_items: tf.Tensor, pool_items: tf.Tensor,
                 cosine: bool = False):
        self.pos_emb, self.pool_emb = pos_emb, pool_emb
        self.pos_items, self.pool_items, self.cosine = pos_items, pool_items, cosine

    def evaluate(self, user_rows: tf.Tensor) -> ItemScores:
        u, p, n = user_rows, self.pos_emb, self.pool_emb
        if self.cosine:
            u, p, n = _unit(u), _unit(p), _unit(n)
        return shared_scores(u, p, n, self.pos_items, self.pool_items)

    def sq_sums(self) -> List[tf.Tensor]:
        batch = tf.cast(tf.shape(self.pos_emb)[0], tf.float32)
        pool = tf.cast(tf.shape(self.pool_emb)[0], tf.float32)
        return [tf.reduce_sum(tf.square(self.pos_emb)), tf.reduce_sum(tf.square(self.pool_emb)) * batch / pool]

    def watched(self) -> Sequence[tf.Tensor]:
        return [self.pos_emb, self.pool_emb]

    def perturbed(self, grads: Sequence[tf.Tensor], perturb: Perturb) -> "SharedItems":
        """The positive and pool rows moved by Δ = perturb(row grads, ids), as one item table."""
        gi, gn = grads
        batch = tf.shape(self.pos_emb)[0]
        delta = perturb(tf.concat([gi, gn], 0), tf.concat([tf.cast(self.pos_items, tf.int32),
                                                           tf.cast(self.pool_items, tf.int32)], 0))
        return SharedItems(self.pos_emb + delta[:batch], self.pool_emb + delta[batch:], self.pos_items,
                           self.pool_items, self.cosine)


def shared_pool(neg_items: tf.Tensor, size: int) -> tf.Tensor:
    """[B, D] drawn negatives -> the batch's pool: the first `size` of them
    in row order ([min(size, B·D)] int32)."""
    return tf.cast(tf.reshape(neg_items, [-1])[:size], tf.int32)


def shared_items(item_table, pos_items: tf.Tensor, neg_items: tf.Tensor, size: int,
                 cosine: bool = False) -> SharedItems:
    """The `SharedItems` of a batch: its positives [B] and the pool of `size`
    taken from its drawn negatives [B, D] (`shared_pool`), gathered from
    `item_table` [num_items, d] (a variable or tensor)."""
    from tf_sharpcf.optim.sparse import gather_rows
    pool = shared_pool(neg_items, size)
    return SharedItems(gather_rows(item_table, pos_items), gather_rows(item_table, pool), pos_items, pool, cosine)
