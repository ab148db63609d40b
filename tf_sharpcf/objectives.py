"""Training objectives: pure tensor functions and the objects built from them.

An objective is called by `MatrixFactorization.train_step` inside its tape as
`objective(step) -> (loss, logs)`, with `step` a `StepInputs`: the batch's
ids, its gathered embedding rows, the epoch and the table sizes; it never sees
the model. `MatrixFactorization.embed` gathers K = 1 as [B, d] rows, so that
the loss, its gradients and the optimizer see the one-negative graph of old,
bit for bit. An objective names the log entries it returns in `log_names`;
`warmup()` gives the objective to use for the first `E_start` epochs.
"""
from __future__ import annotations

from typing import Dict, NamedTuple, Tuple

import tensorflow as tf

from tf_sharpcf.replica import sum_rows_over_global_batch
from tf_sharpcf.trajectory import TrajectoryTable

Logs = Dict[str, tf.Tensor]


class StepInputs(NamedTuple):
    """What an objective gets for one batch (B rows, K negatives, d dims)."""
    element_ids: tf.Tensor      # [B] int32: rows of the canonical training table
    users: tf.Tensor            # [B] int32
    pos_items: tf.Tensor        # [B] int32
    neg_items: tf.Tensor        # [B, K] int32
    user_emb: tf.Tensor         # [B, d] float32, gathered inside the tape
    pos_emb: tf.Tensor          # [B, d]
    neg_emb: tf.Tensor          # [B, K, d]; [B, d] when K = 1
    epoch: tf.Tensor            # scalar int64 (0-based), read in the graph
    num_users: int              # table sizes (APR's repeated-row sums)
    num_items: int


# ---------------------------------------------------------------------------
# Pure functions


def bpr_loss(pos_scores: tf.Tensor, neg_scores: tf.Tensor) -> tf.Tensor:
    """Mean of -ln σ(ŷ_ui − ŷ_uj) over the batch's B·K (positive, negative) pairs (Eq. 3).

    pos_scores: [B] float32; neg_scores: [B, K] float32 (K negatives per
    positive), or [B] for K = 1 -> scalar. -ln σ(x) is computed as
    softplus(-x), the same value without overflow for large |x|.
    """
    if len(neg_scores.shape) == 1:
        return tf.reduce_mean(tf.nn.softplus(neg_scores - pos_scores))
    return tf.reduce_mean(tf.nn.softplus(neg_scores - pos_scores[:, None]))


def l2_penalty(user: tf.Tensor, pos: tf.Tensor, neg: tf.Tensor) -> tf.Tensor:
    """½ (‖e_u‖² + ‖e_i‖² + (1/K) Σ_k ‖e_jk‖²) summed over the batch, divided by B.

    user, pos: [B, d]; neg: [B, K, d], or [B, d] for K = 1 -> scalar. The K
    negative rows share one negative's weight, so the penalty per positive,
    and a given L2 weight's strength, do not depend on K (at K = 1 it is
    Eq. 3's usual term).
    """
    batch = tf.cast(tf.shape(user)[0], tf.float32)
    sums = [tf.reduce_sum(tf.square(user)), tf.reduce_sum(tf.square(pos))]
    if len(neg.shape) == 2:
        sums.append(tf.reduce_sum(tf.square(neg)))
    else:
        sums.append(tf.reduce_sum(tf.square(neg)) / tf.cast(tf.shape(neg)[1], tf.float32))
    return 0.5 * tf.add_n(sums) / batch


def adversarial_perturbation(grads: tf.Tensor, ids: tf.Tensor, eps: float, num_rows=None) -> tf.Tensor:
    """Δ = ρ · g / ‖g‖ per embedding row (the FGM step of APR, Eq. 5).

    grads: [B, d] gradients of the loss w.r.t. the gathered batch embeddings;
    ids: [B] the table rows they were gathered from. Gradients of rows that
    appear several times are summed first (the gradient w.r.t. the table row,
    as in the original APR code) and normalised per row. Under a
    `tf.distribute` strategy the sum runs over the global batch, every
    replica's rows (`replica.sum_rows_over_global_batch`); num_rows, the
    table's row count, makes that sum faster (`sparse.sum_repeated_rows`).
    Returns [B, d], each row of L2 norm `eps` (0 where the gradient is 0).
    """
    row_grads = sum_rows_over_global_batch(grads, ids, num_rows)
    return tf.stop_gradient(eps * tf.math.l2_normalize(row_grads, axis=1))


def trajectory_loss(scores: tf.Tensor, old_scores: tf.Tensor) -> tf.Tensor:
    """(1/|B|) ‖Ŷ_B(Θ_e) − Ŷ_B(Θ_{e−E})‖² (the second term of Eq. 17, without λ).

    scores: [B] current positive scores; old_scores: [B] constants. -> scalar.
    """
    return tf.reduce_mean(tf.square(scores - tf.stop_gradient(old_scores)))


def dot(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    """Row-wise dot product (Eq. 2): [B, d], [B, d] -> [B]; [B, d], [B, K, d] -> [B, K]."""
    if len(b.shape) == 3:
        return tf.reduce_sum(a[:, None, :] * b, axis=2)
    return tf.reduce_sum(a * b, axis=1)


# ---------------------------------------------------------------------------
# Objective objects


class Objective(tf.Module):
    """Base: BPR + L2 on the batch embeddings."""

    log_names: Tuple[str, ...] = ("loss", "bpr_loss", "reg_loss")
    # Whether the fused lazy-Adam CPU kernel makes this objective's epochs
    # faster than the all-XLA step (`MatrixFactorization.compile`, row_kernel=None).
    row_kernel_helps: bool = True

    def __init__(self, l2: float = 0.0, name=None):
        super().__init__(name=name)
        self.l2 = float(l2)

    def warmup(self) -> "Objective":
        return self

    def __call__(self, step: StepInputs) -> Tuple[tf.Tensor, Logs]:
        eu, ei, ej = step.user_emb, step.pos_emb, step.neg_emb
        pos, neg = dot(eu, ei), dot(eu, ej)
        bpr = bpr_loss(pos, neg)
        reg = self.l2 * l2_penalty(eu, ei, ej)
        extra, logs = self.extra_loss(step, (pos, neg), bpr)
        loss = bpr + reg + extra
        return loss, {"loss": loss, "bpr_loss": bpr, "reg_loss": reg, **logs}

    def extra_loss(self, step: StepInputs, scores, bpr):
        """scores: ([B] positive, [B, K] or [B] negative scores) -> (term, its logs)."""
        return tf.constant(0.0), {}


class BPR(Objective):
    """Eq. 3: the batch BPR loss (+ L2)."""


class APR(Objective):
    """Eq. 6: BPR(Θ) + α · BPR(Θ + Δ_adv), Δ_adv = ρ · g/‖g‖ held constant.

    Two forward/backward passes: the inner tape gives g, the gradient of the
    clean BPR loss w.r.t. the batch embeddings; the outer one trains on both.
    """

    log_names = Objective.log_names + ("adversarial_loss",)

    def __init__(self, eps: float = 0.5, adv_weight: float = 1.0, l2: float = 0.0, negatives: int = 1,
                 name=None):
        super().__init__(l2=l2, name=name)
        self.eps = float(eps)
        self.adv_weight = float(adv_weight)
        # The fused row kernel measured slower than the all-XLA step for APR
        # at K = 1 and faster at K > 1 (README, Benchmarks).
        self.row_kernel_helps = int(negatives) > 1

    def warmup(self) -> Objective:
        return BPR(l2=self.l2)

    def __call__(self, step: StepInputs):
        eu, ei, ej = step.user_emb, step.pos_emb, step.neg_emb
        users, pos_items, neg_items = step.users, step.pos_items, step.neg_items
        with tf.GradientTape() as inner:
            inner.watch([eu, ei, ej])
            bpr = bpr_loss(dot(eu, ei), dot(eu, ej))
        gu, gi, gj = inner.gradient(bpr, [eu, ei, ej])
        du = adversarial_perturbation(gu, users, self.eps, step.num_users)
        # The positive rows and all B·K negative rows, one item-table gradient.
        batch, dim = tf.shape(ei)[0], tf.shape(ei)[1]
        d_items = adversarial_perturbation(tf.concat([gi, tf.reshape(gj, [-1, dim])], 0),
                                           tf.concat([pos_items, tf.reshape(neg_items, [-1])], 0),
                                           self.eps, step.num_items)
        di, dj = d_items[:batch], tf.reshape(d_items[batch:], tf.shape(ej))
        adv = bpr_loss(dot(eu + du, ei + di), dot(eu + du, ej + dj))
        reg = self.l2 * l2_penalty(eu, ei, ej)
        loss = bpr + reg + self.adv_weight * adv
        return loss, {"loss": loss, "bpr_loss": bpr, "reg_loss": reg, "adversarial_loss": adv}


class SharpCF(Objective):
    """Eq. 17: BPR + λ/|B| · ‖Ŷ_B(Θ_e) − Ŷ_B(Θ_{e−E})‖².

    Every step reads each positive pair's score from E epochs ago out of the
    `TrajectoryTable` and writes the current one in its place. The trajectory
    term is on from epoch `warmup_epochs` (0-based) once the table is filled
    (epoch >= E); before that the loss is BPR exactly, and so is λ = 0.
    """

    log_names = Objective.log_names + ("trajectory_loss",)

    def __init__(self, table: TrajectoryTable, lam: float = 0.1, warmup_epochs: int = 0,
                 l2: float = 0.0, name=None):
        super().__init__(l2=l2, name=name)
        self.table = table
        self.lam = float(lam)
        self.warmup_epochs = int(warmup_epochs)

    def extra_loss(self, step: StepInputs, scores, bpr):
        pos = scores[0]
        epoch = step.epoch
        # One gather and one scatter on the table: the old slot out, `pos` in.
        old, write = self.table.exchange(step.element_ids, pos, epoch)
        active = tf.logical_and(epoch >= self.warmup_epochs, self.table.is_filled(epoch))
        traj = trajectory_loss(pos, old)
        with tf.control_dependencies([write]):
            weighted = (self.lam * tf.cast(active, tf.float32)) * traj
        return weighted, {"trajectory_loss": traj}


def make_objective(train_config, num_train: int, retry_safe: bool = False) -> Objective:
    """Builds the objective named by `train_config.method` (its `methods.Method`).
    retry_safe: SharpCF's table with E + 1 slots (`TrajectoryTable`), for
    strategies that may run a step twice (parameter-server)."""
    from tf_sharpcf import methods
    if train_config.method not in methods.names():
        raise ValueError(f"unknown method {train_config.method!r}")
    return methods.get(train_config.method).build(train_config, num_train, retry_safe)
