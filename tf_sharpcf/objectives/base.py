"""The objective interface (`Objective`, `StepInputs`) and the pure loss functions it is built from.

An objective is called by `MatrixFactorization.train_step` inside its tape as
`objective(step) -> (loss, logs)`, with `step` a `StepInputs`: the batch's
ids, its gathered embedding rows, the epoch and the table sizes; it never sees
the model. `MatrixFactorization.embed` gathers K = 1 as [B, d] rows, so that
the loss, its gradients and the optimizer see the one-negative graph of old,
bit for bit. The scores come from `step.items` (`items.py`): the gathered
rows, or the fused K-negative kernel, which gathers no [B, K, d] rows (then
`pos_emb` and `neg_emb` are None); an objective that reads only `items` sets
`fused_items = True` and gets the kernel where the model uses it. An
objective names the log entries it returns in `log_names`; `warmup()` gives
the objective to use for the first `E_start` epochs.
"""
from __future__ import annotations

from typing import Any, Dict, NamedTuple, Tuple

import tensorflow as tf

from tf_sharpcf.objectives.items import GatheredItems, dot, negative_sq_sum  # noqa: F401 (dot: re-exported)
from tf_sharpcf.objectives.losses import BPR_LOSS, ScoreLoss, bpr_loss  # noqa: F401 (bpr_loss: re-exported)


Logs = Dict[str, tf.Tensor]


class StepInputs(NamedTuple):
    """What an objective gets for one batch (B rows, K negatives, d dims)."""
    element_ids: tf.Tensor      # [B] int32: rows of the canonical training table
    users: tf.Tensor            # [B] int32
    pos_items: tf.Tensor        # [B] int32
    neg_items: tf.Tensor        # [B, K] int32
    user_emb: tf.Tensor         # [B, d] float32, gathered inside the tape
    pos_emb: tf.Tensor          # [B, d]; None on the fused path
    neg_emb: tf.Tensor          # [B, K, d]; [B, d] when K = 1; None on the fused path
    epoch: tf.Tensor            # scalar int64 (0-based), read in the graph
    num_users: int              # table sizes (APR's repeated-row sums)
    num_items: int
    items: Any = None           # items.GatheredItems or items.FusedItems; None: gathered from pos/neg_emb


def item_side(step: StepInputs):
    """step.items, or the gathered rows of a `StepInputs` built without it."""
    if step.items is not None:
        return step.items
    return GatheredItems(step.pos_emb, step.neg_emb, step.pos_items, step.neg_items)


# ---------------------------------------------------------------------------
# Pure functions


def l2_penalty(user: tf.Tensor, pos: tf.Tensor, neg: tf.Tensor) -> tf.Tensor:
    """½ (‖e_u‖² + ‖e_i‖² + (1/K) Σ_k ‖e_jk‖²) summed over the batch, divided by B.

    user, pos: [B, d]; neg: [B, K, d], or [B, d] for K = 1 -> scalar. The K
    negative rows share one negative's weight, so the penalty per positive,
    and a given L2 weight's strength, do not depend on K (at K = 1 it is
    Eq. 3's usual term).
    """
    return l2_of_items(user, GatheredItems(pos, neg))


def l2_of_items(user: tf.Tensor, items) -> tf.Tensor:
    """`l2_penalty` with the item terms from `items.sq_sums()` (gathered or
    fused, `items.py`): user [B, d] -> scalar."""
    batch = tf.cast(tf.shape(user)[0], tf.float32)
    return 0.5 * tf.add_n([tf.reduce_sum(tf.square(user)), *items.sq_sums()]) / batch


# ---------------------------------------------------------------------------
# Objective objects


class Objective(tf.Module):
    """Base: a loss on the scores (BPR unless given) + L2 on the batch embeddings.

    loss: a `losses.ScoreLoss`; its value is logged as `<name>_loss`, which
    takes "bpr_loss"'s place in `log_names` for a loss other than BPR.
    """

    log_names: Tuple[str, ...] = ("loss", "bpr_loss", "reg_loss")
    # Reads its scores only through `step.items` (never pos_emb / neg_emb), so
    # the model may score through the fused K-negative kernel. A subclass that
    # overrides `__call__` says so itself.
    fused_items: bool = True
    # Calls `step.items.evaluate` once, at `step.user_emb` (APR does not): the
    # fused step may then compute the scores before the objective runs.
    scores_once: bool = True
    # Whether the fused lazy-Adam CPU kernel makes this objective's epochs
    # faster than the all-XLA step (`MatrixFactorization.compile`, row_kernel=None).
    row_kernel_helps: bool = True

    def __init__(self, l2: float = 0.0, loss: ScoreLoss = BPR_LOSS, name=None):
        super().__init__(name=name)
        self.l2 = float(l2)
        self.loss = loss
        if loss.log_name != BPR_LOSS.log_name:
            self.log_names = tuple(loss.log_name if n == BPR_LOSS.log_name else n for n in type(self).log_names)

    def warmup(self) -> "Objective":
        return self

    def state(self) -> Dict[str, tf.Module]:
        """What the objective keeps from step to step besides the model's
        weights: {name: module} (SharpCF's trajectory table), none by default.
        The run attaches each module to the model as attribute `name`
        (`train.attach_state`), so its checkpoints carry it as
        `model/<name>/...` and a resumed run restores it."""
        return {}

    def continue_from(self, warmup: "Objective", epoch: int) -> None:
        """Sets `state()` to what a run of this objective holds at the start
        of epoch `epoch` when a shared warm-up trained epochs [0, epoch) with
        `warmup` (its `methods.Recording`'s objective, state restored from the
        warm-up's checkpoint). Nothing to set by default."""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "__call__" in cls.__dict__ and "fused_items" not in cls.__dict__:
            cls.fused_items = False

    def __call__(self, step: StepInputs) -> Tuple[tf.Tensor, Logs]:
        eu, items = step.user_emb, item_side(step)
        pos, neg = items.evaluate(eu)
        ranking = self.loss(pos, neg)
        reg = self.l2 * l2_of_items(eu, items)
        extra, logs = self.extra_loss(step, (pos, neg), ranking)
        loss = ranking + reg + extra
        return loss, {"loss": loss, self.loss.log_name: ranking, "reg_loss": reg, **logs}

    def extra_loss(self, step: StepInputs, scores, ranking):
        """scores: ([B] positive, [B, K] or [B] negative scores) -> (term, its logs)."""
        return tf.constant(0.0), {}
