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
from typing import Callable, Dict, Tuple

from tf_sharpcf.params import Param

DEFAULT = "bpr"


@dataclasses.dataclass(frozen=True)
class Loss:
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

    @property
    def fields(self) -> Tuple[str, ...]:
        return tuple(p.field for p in self.params)


_REGISTRY: Dict[str, Loss] = {}


def register(loss: Loss) -> Loss:
    _REGISTRY[loss.name] = loss
    return loss


def unregister(name: str) -> None:
    _REGISTRY.pop(name, None)


def get(name: str) -> Loss:
    """The loss called `name`; KeyError if none is."""
    return _REGISTRY[name]


def names() -> Tuple[str, ...]:
    return tuple(_REGISTRY)


def all_losses() -> Tuple[Loss, ...]:
    return tuple(_REGISTRY.values())


def all_params() -> Tuple[Param, ...]:
    return tuple(p for loss in _REGISTRY.values() for p in loss.params)


def loss_fields() -> Tuple[str, ...]:
    """Every registered loss's own TrainConfig fields, each once."""
    return tuple(dict.fromkeys(f for loss in _REGISTRY.values() for f in loss.fields))


def unused_fields(name: str) -> Tuple[str, ...]:
    """The loss fields a run of loss `name` never reads."""
    own = get(name).fields if name in _REGISTRY else ()
    return tuple(f for f in loss_fields() if f not in own)


def make_loss(train_config):
    """The `ScoreLoss` named by `train_config.loss`."""
    if train_config.loss not in _REGISTRY:
        raise ValueError(f"unknown loss {train_config.loss!r}")
    return _REGISTRY[train_config.loss].build(train_config)


class Names:
    """A live view of the registered names (argparse `choices`)."""

    def __contains__(self, name) -> bool:
        return name in _REGISTRY

    def __iter__(self):
        return iter(_REGISTRY)

    def __len__(self) -> int:
        return len(_REGISTRY)

    def __repr__(self) -> str:
        return repr(tuple(_REGISTRY))


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
