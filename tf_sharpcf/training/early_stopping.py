"""Early stopping on the evaluated metric (`--patience P`): the rule, a pure
function of the run's history rows, and the callback that applies it.

The rule, Keras's `EarlyStopping(patience=P)` or RecBole's `stopping_step`
counted in evaluations: a run stops after the evaluation that makes P
evaluations in a row with no gain of the selection metric (Recall@max K, the
one `BestCheckpoint` keeps) over the best so far. Only the evaluations of the
method's own phase count (`phase_start`), and the best is the best within it,
so an APR or SharpCF run is never stopped in its BPR warm-up, nor right after
it because BPR peaked earlier. Being a function of the rows alone (which
checkpoints/last/ carries), a resumed run decides exactly as an uninterrupted
one, and one that had already met the rule trains no further.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import tensorflow as tf

from tf_sharpcf import methods


def phase_start(train_config) -> int:
    """The first epoch (0-based) whose evaluations the rule counts: E_start
    for a method that starts with a warm-up of the bare loss
    (`methods.Method.warm_start`: APR, SharpCF) or a run whose lr changes
    there (`method_lr`), else 0. A warm-up never stops early, and a run with
    no epoch after its warm-up never stops early."""
    t = train_config
    return t.warmup_epochs if methods.get(t.method).warm_start or t.method_lr else 0


def stop_epoch(rows: Sequence[Dict], metric: str, patience: int, eval_every: int, start: int) -> Optional[int]:
    """The epoch (1-based, as in the rows) after which the rule stops the run, or None.

    rows: history rows in epoch order, {"epoch": e, metric: value, ...}, the
    metric on evaluated epochs only. The evaluations counted are the rows
    with `metric` whose epoch e > `start` (`phase_start`) and e % eval_every
    == 0: the extra evaluation after a run's last epoch does not count, so a
    run resumed with more --epochs decides as one that had them from the
    start. The first counted evaluation sets the best; each later one either
    beats it (strictly: a tie is no gain) and resets the count, or adds one
    to it; the rule is met at the evaluation that brings the count to
    `patience`. patience 0: never. E.g. patience 2, values 0.1, 0.3, 0.3,
    0.2 at epochs 10..40: counts 0, 0, 1, 2 -> 40.
    """
    if patience <= 0:
        return None
    best, since = None, 0
    for row in rows:
        epoch = int(row["epoch"])
        if epoch <= start or epoch % eval_every or metric not in row:
            continue
        value = float(row[metric])
        if best is None or value > best:
            best, since = value, 0
        else:
            since += 1
            if since >= patience:
                return epoch
    return None


class EarlyStopping(tf.keras.callbacks.Callback):
    """Stops `fit` after the epoch at which `stop_epoch` of the history's rows
    is met (`model.stop_training`). Goes after `History`, whose rows it reads,
    and before `LastCheckpoint`, which then saves that epoch as the run's
    last. Inert with patience 0.

    last_epoch: the run's epochs; a run that meets the rule there was not
    stopped early (`stopped_epoch` None).
    """

    def __init__(self, history, monitor: str, patience: int, eval_every: int, start: int, last_epoch: int):
        super().__init__()
        self.history, self.monitor, self.patience = history, monitor, int(patience)
        self.eval_every, self.start, self.last_epoch = int(eval_every), int(start), int(last_epoch)

    @property
    def met(self) -> Optional[int]:
        """The epoch the rule was met at, else None; a resumed run may have met it already."""
        return stop_epoch(self.history.rows, self.monitor, self.patience, self.eval_every, self.start)

    @property
    def stopped_epoch(self) -> Optional[int]:
        """The epoch the run stopped after, before its last one (None: it trains them all)."""
        epoch = self.met
        return epoch if epoch is not None and epoch < self.last_epoch else None

    def on_epoch_end(self, epoch, logs=None):
        if self.met is not None:
            self.model.stop_training = True
