"""SharpCF (Eq. 17): a loss on scores (BPR in the paper) plus λ · the squared change of the batch's positive scores
over E epochs, read from and written to the `TrajectoryTable`.
"""
from __future__ import annotations

from typing import Dict

import tensorflow as tf

from tf_sharpcf.objectives.trajectory import TrajectoryTable, reslot
from tf_sharpcf.objectives.base import Objective, StepInputs
from tf_sharpcf.objectives.losses import BPR_LOSS, ScoreLoss

# The table's name in `SharpCF.state()`: the model's attribute, so checkpoints
# hold it as model/trajectory/scores.
STATE = "trajectory"


def trajectory_loss(scores: tf.Tensor, old_scores: tf.Tensor) -> tf.Tensor:
    """(1/|B|) ‖Ŷ_B(Θ_e) − Ŷ_B(Θ_{e−E})‖² (the second term of Eq. 17, without λ).

    scores: [B] current positive scores; old_scores: [B] constants. -> scalar.
    """
    return tf.reduce_mean(tf.square(scores - tf.stop_gradient(old_scores)))


class SharpCF(Objective):
    """Eq. 17: L + λ/|B| · ‖Ŷ_B(Θ_e) − Ŷ_B(Θ_{e−E})‖², L the objective's loss (BPR by default).

    Every step reads each positive pair's score from E epochs ago out of the
    `TrajectoryTable` and writes the current one in its place. The trajectory
    term is on from epoch `warmup_epochs` (0-based) once the table is filled
    (epoch >= E); before that the loss is L exactly, and so is λ = 0.
    """

    log_names = Objective.log_names + ("trajectory_loss",)

    def __init__(self, table: TrajectoryTable, lam: float = 0.1, warmup_epochs: int = 0,
                 l2: float = 0.0, loss: ScoreLoss = BPR_LOSS, name=None):
        super().__init__(l2=l2, loss=loss, name=name)
        self.table = table
        self.lam = float(lam)
        self.warmup_epochs = int(warmup_epochs)

    def state(self) -> Dict[str, tf.Module]:
        return {STATE: self.table}

    def continue_from(self, warmup: Objective, epoch: int) -> None:
        """The E-slot table at the start of epoch `epoch`, from the W-slot one
        that `warmup` (SharpCF with λ = 0, W >= E) recorded (`reslot`)."""
        recorded = warmup.state()[STATE].scores.numpy()         # [N, W], epoch e in slot e mod W
        self.table.scores.assign(reslot(recorded, int(epoch), self.table.window))

    def extra_loss(self, step: StepInputs, scores, ranking):
        pos = scores[0]
        epoch = step.epoch
        # One gather and one scatter on the table: the old slot out, `pos` in.
        old, write = self.table.exchange(step.element_ids, pos, epoch)
        active = tf.logical_and(epoch >= self.warmup_epochs, self.table.is_filled(epoch))
        traj = trajectory_loss(pos, old)
        with tf.control_dependencies([write]):
            weighted = (self.lam * tf.cast(active, tf.float32)) * traj
        return weighted, {"trajectory_loss": traj}
