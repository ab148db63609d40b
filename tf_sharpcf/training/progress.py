"""The console: one line per evaluated epoch, and the run's progress with the time left."""
from __future__ import annotations

import sys
import time
from typing import Collection, Dict, Optional, Sequence

import tensorflow as tf


def epoch_line(row: Dict, columns: Sequence[str], off: Collection[str] = ()) -> str:
    """'epoch 12 | loss 0.1234 | ... | 2.31s | eval 4.60s' (inactive terms left out)."""
    parts = [f"epoch {row['epoch']}"] + [f"{k} {row[k]:.4f}" for k in columns
                                         if k in row and k not in ("epoch", "seconds", "eval_seconds")
                                         and k not in off]
    parts.append(f"{row.get('seconds', 0):.2f}s")
    if "eval_seconds" in row:
        parts.append(f"eval {row['eval_seconds']:.2f}s")
    return " | ".join(parts)


class Progress(tf.keras.callbacks.Callback):
    """The run's progress over its epochs, with the time left.

    On a terminal: one progress bar over all epochs (ETA, the last epoch's
    losses), and above it one line per evaluated epoch. Elsewhere (a log
    file, CI): plain lines only, one per evaluated epoch and one every
    `every` epochs, each with the time left; no carriage returns. Reads the
    rows `history` has just written, so it must come after it.
    """

    def __init__(self, history, epochs: int, every: int = 10, stream=None,
                 terminal: Optional[bool] = None):
        super().__init__()
        self.history, self.epochs, self.every = history, int(epochs), max(1, int(every))
        self.stream = stream or sys.stderr
        self.terminal = self.stream.isatty() if terminal is None else terminal
        self._start, self._first = None, None

    def on_epoch_begin(self, epoch, logs=None):
        if self._start is None:
            self._start, self._first = time.perf_counter(), epoch

    def _left(self, epoch: int) -> float:
        done = epoch + 1 - self._first
        return (time.perf_counter() - self._start) / done * (self.epochs - epoch - 1)

    def on_epoch_end(self, epoch, logs=None):
        row = self.history.rows[-1]
        off = set(self.history.inactive(epoch))
        evaluated = "eval_seconds" in row
        if self.terminal:
            if evaluated:
                self.stream.write("\r\033[K" + epoch_line(row, self.history.columns, off) + "\n")
            losses = " ".join(f"{k} {row[k]:.4f}" for k in ("loss", "trajectory_loss", "adversarial_loss")
                              if k in row and k not in off)
            done = (epoch + 1) / self.epochs
            bar = "=" * int(done * 30)
            self.stream.write(f"\r\033[K[{bar:<30s}] {epoch + 1}/{self.epochs} epochs, "
                              f"{_duration(self._left(epoch))} left | {losses}")
            if epoch + 1 >= self.epochs:
                self.stream.write("\n")
            self.stream.flush()
        elif evaluated or (epoch + 1) % self.every == 0 or epoch + 1 == self.epochs:
            left = self._left(epoch)
            line = epoch_line(row, self.history.columns, off)
            self.stream.write(f"{line} | {epoch + 1}/{self.epochs}, {_duration(left)} left\n")
            self.stream.flush()


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")
