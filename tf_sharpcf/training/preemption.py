"""Stopping training after a chunk of batches on SIGTERM or SIGINT, and going on from there.

`StopInEpoch` looks at `signals.requested()` after every call into the train
function: a chunk of k batches under the default strategy
(`input_pipeline.training_dataset(batches_per_chunk=k)`), `steps_per_execution`
batches under a mirrored one. When a stop was asked for, it writes
checkpoints/last/ at that point (`LastCheckpoint.save`: atomic and checksummed
like every checkpoint) and raises `errors.Stopped`. Within an epoch the
checkpoint's meta.json holds

  epoch:    e, the epochs completed
  batches:  b, the batches of epoch e + 1 already trained (0 < b < its batches)
  in_epoch: {logs: {name: [total, count]}, seconds}: that epoch's running
            means (the model's Keras `Mean` trackers) and training seconds

beside the model (the embeddings, `epoch`, and SharpCF's trajectory table,
whose slots for those b batches' elements already hold this epoch's scores)
and the optimizer (its slots and step count). Each epoch's batches are a pure
function of (seed, epoch), so that is all a resumed run needs (`InEpoch`): it
trains epoch e + 1 from batch b on (`training_dataset(first_batch=b)`, in a
`fit` call of its own: `epoch_spans`), puts the trackers and the seconds back
as that epoch begins, and ends bit-identical to a run never stopped.

A stop asked for during an epoch's last chunk waits for the epoch's end
(evaluation, history row) and saves there, as does every stop under the
parameter-server strategy (`StopOnSignal`): Keras has no per-step hook there,
and the coordinator would first have to join the steps already scheduled on
the workers. `tf.distribute.experimental.PreemptionCheckpointHandler` does not
support that strategy either; its model (save at an agreed step, exit, restore
on restart) is what this module does on one process or a mirrored one.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import tensorflow as tf

from tf_sharpcf.data.input_pipeline import steps_per_epoch
from tf_sharpcf.errors import Stopped
from tf_sharpcf.training import signals
from tf_sharpcf.training.callbacks import EpochTimer, LastCheckpoint


def epoch_spans(start: int, end: int, first_batch: int = 0) -> List[Tuple[int, int, int]]:
    """The `fit` calls for epochs [start, end) when epoch `start` begins at
    batch `first_batch`: [(start, end, first batch)], that epoch alone first
    when first_batch > 0 (its steps are fewer than the others')."""
    if not first_batch:
        return [(start, end, 0)]
    return [(start, start + 1, first_batch)] + ([(start + 1, end, 0)] if end > start + 1 else [])


@dataclasses.dataclass(frozen=True)
class InEpoch:
    """Where a run stopped within an epoch, from its checkpoint's meta.json."""

    epoch: int                               # 0-based: the epoch to finish (= epochs completed)
    batches: int                             # of that epoch already trained
    logs: Dict[str, Tuple[float, float]]     # tracker name -> (total, count)
    seconds: float

    @staticmethod
    def from_meta(meta: Dict) -> Optional["InEpoch"]:
        """None for a checkpoint written at an epoch's end."""
        if not meta.get("batches"):
            return None
        state = meta.get("in_epoch") or {}
        return InEpoch(int(meta["epoch"]), int(meta["batches"]),
                       {name: (float(t), float(c)) for name, (t, c) in state.get("logs", {}).items()},
                       float(state.get("seconds", 0.0)))


class StopOnSignal(tf.keras.callbacks.Callback):
    """Stops the run where a requested stop can be saved: at the end of an
    epoch, or before the first step of a `fit` call. Saves (unless the
    checkpoint there is already written, or nothing was trained) and raises
    `Stopped`. Goes after every other callback, so they all see the step.

    last: the run's `LastCheckpoint`; timer: its `EpochTimer`; epochs_done:
    where the run starts; resumed: the `InEpoch` it continues, if any.
    """

    def __init__(self, last: LastCheckpoint, timer: EpochTimer, workdir: Path, epochs_done: int,
                 resumed: Optional[InEpoch], batches_per_step: int, num_train: int, batch_size: int):
        super().__init__()
        self.last, self.timer, self.workdir, self.resumed = last, timer, Path(workdir), resumed
        self.done, self.batches_per_step = int(epochs_done), int(batches_per_step)
        self.full = num_train // batch_size                   # full batches per epoch
        self.batches = steps_per_epoch(num_train, batch_size)      # batches per epoch
        self.trained = False                                  # anything since the run's start point
        self._epoch, self._first = self.done, 0

    def on_train_begin(self, logs=None):
        if signals.requested() is not None:
            self._stop((self.done, 0), f"after epoch {self.done}")

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch, self._first, self.trained = epoch, 0, True
        if self.resumed is not None and epoch == self.resumed.epoch:
            self._first = self.resumed.batches
            for tracker in self.model.metrics:       # reset by Keras just before this hook
                if tracker.name in self.resumed.logs:
                    total, count = self.resumed.logs[tracker.name]
                    tracker.total.assign(total)
                    tracker.count.assign(count)

    def on_epoch_end(self, epoch, logs=None):
        self.done = epoch + 1
        # After the run's last epoch (or an early stop) only metrics.json is left: `signals.deferring`
        # stops after it.
        if signals.requested() is not None and self.done < self.last.last_epoch and not self.model.stop_training:
            self._stop((self.done, 0), f"after epoch {self.done}")

    def _stop(self, position: Tuple[int, int], where: str, in_epoch: Optional[Dict] = None):
        signum = signals.requested()
        if not self.trained:
            where = "before training anything"
        else:
            folder = self.last.folder if self.last.saved == position else self.last.save(*position, in_epoch=in_epoch)
            where += f"; saved {folder}"
        raise Stopped(signum, where, f"continue with fit --resume {self.workdir}")


class StopInEpoch(StopOnSignal):
    """`StopOnSignal`, and after any chunk of batches: saves a mid-epoch
    checkpoint (module docstring). One device or a mirrored strategy."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._supports_tf_logs = True        # the logs are not read: no conversion to numbers

    def on_train_batch_end(self, batch, logs=None):
        if signals.requested() is None:
            return
        steps = batch + 1                    # Keras passes the execution's last step (0-based)
        if steps >= self.params["steps"]:
            return                           # the epoch's last: stop at its end
        done = min(self._first + steps * self.batches_per_step, self.full)
        state = {"logs": {m.name: [float(m.total.numpy()), float(m.count.numpy())] for m in self.model.metrics},
                 "seconds": self.timer.elapsed()}
        self._stop((self._epoch, done), f"after batch {done} of {self.batches} of epoch {self._epoch + 1}",
                   state)


class StopUnsaved(tf.keras.callbacks.Callback):
    """For a `fit` whose state is kept only when it ends (the tuner's shared
    warm-up): on a requested stop, raises `Stopped` after the current chunk
    without saving; that training is done again."""

    def __init__(self):
        super().__init__()
        self._supports_tf_logs = True

    def on_train_batch_end(self, batch, logs=None):
        signum = signals.requested()
        if signum is not None:
            raise Stopped(signum, "during a warm-up, which is not saved part-way")
