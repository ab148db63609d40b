"""APR (Eq. 6): BPR plus α · BPR at the worst-case perturbation of the batch's rows.
"""
from __future__ import annotations


import tensorflow as tf

from tf_sharpcf.distribute.replica import sum_rows_over_global_batch
from tf_sharpcf.objectives.base import Objective, StepInputs, item_side, l2_of_items
from tf_sharpcf.objectives.losses import BPR_LOSS, ScoreLoss


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


class APR(Objective):
    """Eq. 6: L(Θ) + α · L(Θ + Δ_adv), Δ_adv = ρ · g/‖g‖ held constant, for
    the objective's loss L on the scores (BPR in the paper).

    Two forward/backward passes: the inner tape gives g, the gradient of the
    clean loss w.r.t. the batch embeddings; the outer one trains on both.
    """

    log_names = Objective.log_names + ("adversarial_loss",)
    fused_items = True
    scores_once = False         # it scores the perturbed rows too

    def __init__(self, eps: float = 0.5, adv_weight: float = 1.0, l2: float = 0.0, negatives: int = 1,
                 loss: ScoreLoss = BPR_LOSS, name=None):
        super().__init__(l2=l2, loss=loss, name=name)
        self.eps = float(eps)
        self.adv_weight = float(adv_weight)
        # The fused row kernel measured slower than the all-XLA step for APR
        # at K = 1 and faster at K > 1 (README, Benchmarks).
        self.row_kernel_helps = int(negatives) > 1

    def warmup(self) -> Objective:
        return Objective(l2=self.l2, loss=self.loss)

    def __call__(self, step: StepInputs):
        eu, items = step.user_emb, item_side(step)
        watched = list(items.watched())
        with tf.GradientTape() as inner:
            inner.watch([eu, *watched])
            pos, neg = items.evaluate(eu)
            clean = self.loss(pos, neg)
        gu, *g_items = inner.gradient(clean, [eu, *watched])
        du = adversarial_perturbation(gu, step.users, self.eps, step.num_users)
        # The positive rows and all B·K negative rows, one item-table gradient.
        moved = items.perturbed(g_items, lambda g, ids: adversarial_perturbation(g, ids, self.eps,
                                                                                 step.num_items))
        adv = self.loss(*moved.evaluate(eu + du))
        reg = self.l2 * l2_of_items(eu, items)
        loss = clean + reg + self.adv_weight * adv
        return loss, {"loss": loss, self.loss.log_name: clean, "reg_loss": reg, "adversarial_loss": adv}
