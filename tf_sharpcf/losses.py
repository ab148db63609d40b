"""The loss registry: each loss on the scores, declared once.

A `Loss` is the ranking loss an objective trains on: a function of the
batch's positive scores [B] and negative scores [B, K]
(`objectives/losses.py`). The method (`methods.py`: none, APR, SharpCF) is
the regulariser wrapped around it, so `fit --loss softmax --method sharpcf`
trains SharpCF's trajectory term on top of a sampled softmax. A loss names
its hyper-parameters (`params.Param`) and its log entry (`<name>_loss`, a
column of history.csv). Registering a `Loss` is all a new loss needs to
appear in `fit --loss`, `tune` and the pipeline.

TensorFlow-free: `build` imports the loss functions when called.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Tuple

from tf_sharpcf.params import Param, Part, Parts

DEFAULT = "bpr"


@dataclasses.dataclass(frozen=True)
class Loss(Part):
    """One loss on scores.

    name: the `--loss` value. label: tables and figures. build: train_config ->
    `objectives.losses.ScoreLoss`. params: the hyper-parameters only it reads.
    """

    name: str
    label: str
    build: Callable
    params: Tuple[Param, ...] = ()
    doc: str = ""

    @property
    def log_name(self) -> str:
        return f"{self.name}_loss"


PARTS = Parts("loss")        # the registered losses; also a live view of their names
register, unregister, get, names = PARTS.register, PARTS.unregister, PARTS.get, PARTS.names
all_losses, all_params, loss_fields, unused_fields = PARTS.all, PARTS.all_params, PARTS.fields, PARTS.unused_fields


def make_loss(train_config):
    """The `ScoreLoss` named by `train_config.loss`."""
    return PARTS.build(train_config.loss, train_config)


# ---------------------------------------------------------------------------
# The losses


def _bpr(t):
    from tf_sharpcf.objectives.losses import BPR_LOSS
    return BPR_LOSS


def _softmax(t):
    from tf_sharpcf.objectives.losses import softmax
    return softmax(t.temperature)


def _hardest(t):
    from tf_sharpcf.objectives.losses import HARDEST_LOSS
    return HARDEST_LOSS


register(Loss("bpr", "BPR", _bpr, doc="Eq. 3: -ln σ(ŷ_ui − ŷ_uj), averaged over the B·K pairs"))
register(Loss("softmax", "Softmax", _softmax, params=(
    Param("temperature", "temperature", float, 0, "softmax loss: temperature τ", "tau",
          None, "sampled softmax's temperature τ", above=True),),
    doc="sampled softmax: cross-entropy of the positive against its K negatives, scores / τ"))
register(Loss("hardest", "Hardest-of-K", _hardest,
              doc="-ln σ(ŷ_ui − max_k ŷ_uj): BPR on the highest-scored of the K negatives (DNS)"))
