"""Per-epoch hooks around `fit`: the epoch counter, timing, the non-finite
loss check, evaluation, the history file and TensorBoard scalars, the
best-epoch checkpoint and the training checkpoint to resume from (the
console display is `progress.py`)."""
from __future__ import annotations

import contextlib
import csv
import io
import math
import re
import socket
import sys
import time
from pathlib import Path
from typing import Callable, Collection, Dict, List, Optional, Sequence

import tensorflow as tf

from tf_sharpcf.training import checkpointing, run_dir
from tf_sharpcf.errors import TrainingError
from tf_sharpcf.evaluation.metrics import is_metric
from tf_sharpcf.evaluation.ranking import Evaluator
from tf_sharpcf.atomic import WriteError, atomic_save_npy, atomic_write_text
from tf_sharpcf.training.progress import epoch_line


class EpochCounter(tf.keras.callbacks.Callback):
    """Sets `model.epoch` (0-based) before each epoch; SharpCF's slot depends on it."""

    def on_epoch_begin(self, epoch, logs=None):
        self.model.epoch.assign(epoch)


class NonFiniteLoss(TrainingError):
    pass


class EpochTimer(tf.keras.callbacks.Callback):
    """Adds `seconds` (training time of the epoch, evaluation excluded) to the logs.

    carried: {epoch: seconds} already spent on an epoch by a run stopped in
    it (`preemption.InEpoch`), counted in when the epoch goes on.
    """

    def __init__(self, carried: Optional[Dict[int, float]] = None):
        super().__init__()
        self.carried = dict(carried or {})

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter() - self.carried.pop(epoch, 0.0)

    def elapsed(self) -> float:
        """Seconds of the current epoch so far."""
        return time.perf_counter() - self._start

    def on_epoch_end(self, epoch, logs=None):
        logs["seconds"] = self.elapsed()


class StopOnNonFiniteEpochLoss(tf.keras.callbacks.Callback):
    """Raises `NonFiniteLoss` naming the epoch when an epoch's loss is NaN or
    infinite. No batch hook: under ParameterServerStrategy the steps are
    asynchronous (and Keras refuses batch hooks there)."""

    def on_epoch_end(self, epoch, logs=None):
        self._check(logs, epoch, "")

    @staticmethod
    def _check(logs, epoch, where):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            at = f" ({where})" if where else ""
            raise NonFiniteLoss(f"training stopped: non-finite loss ({float(loss)}) in epoch {epoch + 1}{at}")


class StopOnNonFiniteLoss(StopOnNonFiniteEpochLoss):
    """Raises `NonFiniteLoss` naming the epoch and batches as soon as the
    running loss of an epoch is NaN or infinite.

    `fit` calls the train function once per chunk of batches (see
    `input_pipeline.training_dataset`: chunks of `batches_per_chunk` full
    batches, then the short batch alone); the running mean stays non-finite
    once a batch was, so the first chunk whose logs are non-finite holds the
    first bad batch. Reading the loss costs one scalar copy per chunk. The
    epoch's callbacks after this one (history, checkpoints) do not run, so the
    last checkpoint stays good.
    """

    def __init__(self, batches_per_chunk: int, num_train: int, batch_size: int, resumed=(-1, 0)):
        super().__init__()
        self._supports_tf_logs = True     # no conversion of the other callbacks' batch logs
        self.k = batches_per_chunk
        self.full, tail = divmod(num_train, batch_size)
        self.batches = self.full + (1 if tail else 0)
        self.resumed = resumed            # (epoch, batches of it trained before a stop, `preemption.py`)

    def on_train_batch_end(self, batch, logs=None):
        first = self._first + batch * self.k + 1
        last = min(first + self.k - 1, self.full) if first <= self.full else first
        where = f"batch {first}" if first == last else f"batches {first}-{last}"
        self._check(logs, self._epoch, f"{where} of {self.batches}")

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._first = self.resumed[1] if epoch == self.resumed[0] else 0


class Evaluate(tf.keras.callbacks.Callback):
    """Full-ranking evaluation every `every` epochs and after the last one."""

    def __init__(self, evaluator: Evaluator, every: int, last_epoch: int):
        super().__init__()
        self.evaluator, self.every, self.last_epoch = evaluator, every, last_epoch

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every == 0 or epoch + 1 == self.last_epoch:
            logs.update(self.evaluator.evaluate(*self.model.final_embeddings()))


class History(tf.keras.callbacks.Callback):
    """Writes `history.csv` (one row per epoch, fixed columns), TensorBoard
    scalars, and a one-line summary per epoch.

    A resumed run passes the checkpointed `rows` and `resume=True`:
    history.csv is rewritten from them at once (dropping rows of epochs
    trained after the checkpoint), and TensorBoard is told to drop its points
    from the first epoch to be trained again onwards (see `purge_tensorboard`).
    """

    def __init__(self, path: Path, columns: Sequence[str], tensorboard_dir: Optional[Path] = None,
                 rows: Optional[List[Dict]] = None, verbose: int = 0, resume: bool = False,
                 inactive: Optional[Callable[[int], Collection[str]]] = None):
        super().__init__()
        self.path, self.columns, self.verbose = path, ["epoch", *columns], verbose
        # inactive(epoch) -> log names computed but not in that epoch's loss
        # (SharpCF's trajectory term before it is on): kept in history.csv,
        # left out of TensorBoard and the console.
        self.inactive = inactive or (lambda epoch: ())
        self.rows: List[Dict] = list(rows or [])
        self.tensorboard_dir, self.writer = tensorboard_dir, None
        if resume:
            self.flush()
        if tensorboard_dir:
            with self._writing_tensorboard():
                if resume:
                    purge_tensorboard(Path(tensorboard_dir), self.rows[-1]["epoch"] + 1 if self.rows else 1)
                self.writer = tf.summary.create_file_writer(str(tensorboard_dir))

    @contextlib.contextmanager
    def _writing_tensorboard(self):
        try:
            yield
        except (OSError, tf.errors.OpError) as e:
            raise WriteError(self.tensorboard_dir, e) from None

    def on_epoch_end(self, epoch, logs=None):
        row = {"epoch": epoch + 1, **{k: float(v) for k, v in logs.items() if k in self.columns}}
        self.rows.append(row)
        self.flush()
        off = set(self.inactive(epoch))
        if self.writer:
            with self._writing_tensorboard(), self.writer.as_default(step=epoch + 1):
                for k, v in row.items():
                    if k != "epoch" and k not in off:
                        tf.summary.scalar(k, v)
                self.writer.flush()
        if self.verbose:            # every epoch, one line (fit --verbose)
            print(epoch_line(row, self.columns, off), file=sys.stderr, flush=True)

    def flush(self):
        out = io.StringIO()
        w = csv.DictWriter(out, fieldnames=self.columns, restval="", lineterminator="\n")
        w.writeheader()
        for row in self.rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
        atomic_write_text(self.path, out.getvalue())


def purge_tensorboard(folder: Path, step: int) -> None:
    """Makes TensorBoard drop the run's points at steps >= `step`.

    TensorBoard treats a `SessionLog.START` event as a restart from a
    checkpoint and discards every point at or after its step, except for the
    first START of a run, which only marks the start. So two are written: one
    at the largest step (discards nothing) and one at `step`. They go into
    their own file, named to sort after the existing event files and before
    the writer's next one: TensorBoard reads a folder's event files in name
    order, and names begin with the creation time in seconds. The file takes
    the newest existing time stamp (or the last second), and waits for the
    next second only when that is the current one.
    """
    folder.mkdir(parents=True, exist_ok=True)
    stamps = [int(m.group(1)) for p in folder.iterdir()
              if (m := re.match(r"events\.out\.tfevents\.(\d+)\.", p.name))]
    stamp = max([int(time.time()) - 1, *stamps])
    name = f"events.out.tfevents.{stamp:010d}.{socket.gethostname()}.~restart-{step}"
    start = tf.compat.v1.SessionLog(status=tf.compat.v1.SessionLog.START)
    events = [tf.compat.v1.Event(wall_time=time.time(), file_version="brain.Event:2"),
              tf.compat.v1.Event(wall_time=time.time(), step=2 ** 63 - 1, session_log=start),
              tf.compat.v1.Event(wall_time=time.time(), step=step, session_log=start)]

    # Written in place: a temporary name would also look like an event file to
    # TensorBoard, and a cut-short file only holds the harmless first event.
    with tf.io.TFRecordWriter(str(folder / name)) as f:
        for event in events:
            f.write(event.SerializeToString())
    while int(time.time()) <= stamp:
        time.sleep(0.05)


class BestCheckpoint(tf.keras.callbacks.Callback):
    """Keeps the best evaluated epoch (by `monitor`): a tf.train checkpoint of
    the model, and `user_embeddings.npy` / `item_embeddings.npy`."""

    def __init__(self, workdir: Path, monitor: str = "recall@20", best: Optional[Dict] = None):
        super().__init__()
        self.workdir, self.monitor = workdir, monitor
        self.best: Optional[Dict] = best

    def on_epoch_end(self, epoch, logs=None):
        if self.monitor not in logs:
            return
        if self.best is not None and logs[self.monitor] <= self.best[self.monitor]:
            return
        self.best = {"epoch": epoch + 1, **{k: float(v) for k, v in logs.items()
                                            if is_metric(k)}}
        checkpointing.write(self.workdir / run_dir.BEST, self.model, meta=self.best)
        users, items = run_dir.EMBEDDINGS
        user_rows, item_rows = self.model.final_embeddings()     # what the model ranks by
        atomic_save_npy(self.workdir / users, user_rows.numpy())
        atomic_save_npy(self.workdir / items, item_rows.numpy())


class LastCheckpoint(tf.keras.callbacks.Callback):
    """The training checkpoint to resume from: every `every` epochs (counted
    from epoch 0) and after the run's last epoch (epoch `last_epoch`, or one
    after which a callback before this one ended the run, e.g. early stopping:
    `model.stop_training`), `folder` gets the model, the optimizer, and
    meta.json {epoch: epochs completed, history: rows, best}.

    Runs after `History` and `BestCheckpoint`, so the meta includes this
    epoch's row and best. `save` also writes mid-epoch (`preemption.py`).
    """

    def __init__(self, folder: Path, every: int, last_epoch: int, history: History, best: BestCheckpoint):
        super().__init__()
        self.folder, self.every, self.last_epoch = Path(folder), every, last_epoch
        self.history, self.best = history, best
        self.saved = None        # (epochs, batches) of the last save by this process

    def on_epoch_end(self, epoch, logs=None):
        done = epoch + 1
        if done == self.last_epoch or self.model.stop_training or (self.every and done % self.every == 0):
            self.save(done)

    def save(self, epochs: int, batches: int = 0, in_epoch: Optional[Dict] = None) -> Path:
        """Writes the checkpoint after `epochs` epochs and `batches` batches of
        the next one; meta.json gets `batches` and `in_epoch` (that epoch's
        running logs and seconds) when `batches` > 0."""
        meta = {"epoch": epochs, "history": self.history.rows, "best": self.best.best}
        if batches:
            meta.update(batches=batches, in_epoch=in_epoch)
        folder = checkpointing.write(self.folder, self.model, self.model.optimizer, meta=meta)
        self.saved = (epochs, batches)
        return folder
