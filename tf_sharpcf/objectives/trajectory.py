"""`TrajectoryTable`: the positive-pair scores SharpCF compares against.

A non-trainable float32 variable on the model's device holding, for each of
the N training interactions, its scores from the last E epochs. Slot
`epoch mod E` is read and then overwritten in epoch `epoch`, so the value read
for an element is its score from exactly E epochs earlier. Only storage lives
here; the loss maths is in `sharpcf.py`.

Layout: the variable is `[N, E]` (element-major), the transpose of the paper's
`[E, N]` picture. One row gather then reads an element's whole window, and
the read and write are a `ResourceGather` and a `ResourceScatterUpdate`, both
of which XLA compiles (`ResourceGatherNd` has no XLA kernel). `by_epoch()`
returns the `[E, N]` view.

Retry-safe layout (`retry_safe=True`, used under ParameterServerStrategy,
where the coordinator re-runs a step whose worker failed): E + 1 slots, epoch
e writes slot `e mod (E+1)` and reads slot `(e − E) mod (E+1)`. The two
differ, so a re-run of a step reads the same old scores as its first attempt
even where that attempt already wrote its new ones; slot `(e − E) mod (E+1)`
was last written in epoch e − E.

Under a mirrored `tf.distribute` strategy the variable is mirrored (one full copy per
replica, aggregation NONE, so a write in replica context changes only the
local copy). `update` all-gathers the global batch's (id, score) pairs and
every replica applies the same scatter, so the copies stay equal.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from tf_sharpcf.distribute.replica import replica_context, gather_across_replicas
from tf_sharpcf.optim.sparse import gather_rows


class TrajectoryTable(tf.Module):
    """Scores of the N training interactions over the last E epochs.

    Args:
      window: E >= 1, how many epochs back the trajectory looks.
      num_elements: N, rows of the canonical training table.
      retry_safe: E + 1 slots instead of E, so that a step may run twice
        (module docstring).
    """

    def __init__(self, window: int, num_elements: int, name: str = "trajectory", retry_safe: bool = False):
        super().__init__(name=name)
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.window = int(window)
        self.num_elements = int(num_elements)
        self.slots = self.window + int(bool(retry_safe))
        with self.name_scope:
            self.scores = tf.Variable(tf.zeros([self.num_elements, self.slots], tf.float32),
                                      trainable=False, name="scores",
                                      synchronization=tf.VariableSynchronization.ON_WRITE,
                                      aggregation=tf.VariableAggregation.NONE)

    def _slot_mask(self, epoch: tf.Tensor) -> tf.Tensor:
        """[S] float32 one-hot of slot `epoch mod S`: the slot epoch `epoch` writes."""
        slot = tf.math.floormod(tf.cast(epoch, tf.int64), self.slots)
        return tf.one_hot(slot, self.slots, dtype=tf.float32)

    def _read_mask(self, epoch: tf.Tensor) -> tf.Tensor:
        """[S] one-hot of the slot epoch `epoch - E` wrote (the write slot when S = E)."""
        if self.slots == self.window:
            return self._slot_mask(epoch)
        return self._slot_mask(tf.cast(epoch, tf.int64) - self.window)

    def lookup(self, ids: tf.Tensor, epoch: tf.Tensor) -> tf.Tensor:
        """[B] int element ids -> [B] float32 scores written in epoch `epoch - E`."""
        return _read_slot(gather_rows(self.scores, ids), self._read_mask(epoch))

    def update(self, ids: tf.Tensor, scores: tf.Tensor, epoch: tf.Tensor):
        """Writes [B] float32 `scores` of `ids` into slot `epoch mod E`.

        `ids` must be distinct (each element occurs once per epoch). On
        several replicas each passes its own [b_r] ids and scores and every
        replica writes all B of them into its copy.
        """
        ids, scores = gather_across_replicas(ids, scores)
        new = _write_slot(gather_rows(self.scores, ids), scores, self._slot_mask(epoch))
        return self.scores.scatter_update(tf.IndexedSlices(new, ids))

    def exchange(self, ids: tf.Tensor, scores: tf.Tensor, epoch: tf.Tensor):
        """Reads slot `epoch mod E` of `ids` and writes `scores` in its place.

        ids: [B] distinct element ids; scores: [B] float32 current scores.
        -> ([B] float32 scores written in epoch `epoch - E`, the write op).
        On one replica this is one row gather and one row scatter on the
        table, nothing more; the old value and the new row both come from
        the same gathered [B, E] rows. Across replicas the write covers the
        global batch (`update`), so the read is a separate local gather.
        """
        if replica_context() is not None:
            old = self.lookup(ids, epoch)
            with tf.control_dependencies([old]):
                return old, self.update(ids, scores, epoch)
        mask = self._slot_mask(epoch)                              # [S]
        rows = gather_rows(self.scores, ids)                       # [B, S]
        new = _write_slot(rows, scores, mask)
        old = _read_slot(rows, mask if self.slots == self.window else self._read_mask(epoch))
        return old, self.scores.scatter_update(tf.IndexedSlices(new, ids))

    def is_filled(self, epoch: tf.Tensor) -> tf.Tensor:
        """Scalar bool: every slot has been written once before epoch `epoch`."""
        return tf.cast(epoch, tf.int64) >= self.window

    def by_epoch(self) -> tf.Tensor:
        """[S, N] float32 (S = E, or E + 1 retry-safe): row s holds the scores
        last written in an epoch ≡ s (mod S)."""
        return tf.transpose(self.scores)


def _read_slot(rows: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    """[B, E] rows, [E] one-hot slot -> [B] the slot's values."""
    return tf.reduce_sum(rows * mask, axis=1)


def _write_slot(rows: tf.Tensor, scores: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    """[B, E] rows with the one-hot slot's column replaced by [B] `scores`
    (held constant: the table is never differentiated through)."""
    return rows * (1.0 - mask) + tf.stop_gradient(scores)[:, None] * mask


def reslot(recorded: np.ndarray, epoch: int, window: int) -> np.ndarray:
    """A W-slot table as an E-slot one, at the start of epoch `epoch`.

    recorded: [N, W] float32, the table of a run that has trained epochs
    [0, epoch) with window W (epoch e's scores in slot e mod W). Returns
    [N, E] (E = `window` <= W): the table a window-E run holds at that point,
    the scores of epochs [epoch − E, epoch) in slots e mod E (zeros for
    epochs before 0, which no run has written).
    """
    w = recorded.shape[1]
    if window > w:
        raise ValueError(f"window {window} exceeds the {w} epochs recorded")
    table = np.zeros([recorded.shape[0], window], np.float32)
    for e in range(max(0, epoch - window), epoch):
        table[:, e % window] = recorded[:, e % w]
    return table
