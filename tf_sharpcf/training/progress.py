"""The console: one line per evaluated epoch, and the run's progress with the time left."""
from __future__ import annotations

import io
import os
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


# A terminal line never wraps at this width (nor at the terminal's, if narrower).
TERMINAL_COLUMNS = 100


def short_line(row: Dict, monitor: str) -> str:
    """'epoch 12 | recall@20 0.1432 | 2.31s, eval 4.60s': an evaluated epoch on a
    terminal, the metric the run selects its best epoch on and the times only
    (every other column is in history.csv and TensorBoard)."""
    parts = [f"epoch {row['epoch']}"]
    if monitor in row:
        parts.append(f"{monitor} {row[monitor]:.4f}")
    times = f"{row.get('seconds', 0):.2f}s"
    if "eval_seconds" in row:
        times += f", eval {row['eval_seconds']:.2f}s"
    return " | ".join([*parts, times])[:TERMINAL_COLUMNS]


def selected_metric(columns: Sequence[str]) -> Optional[str]:
    """The best epoch's metric: Recall at the largest cut-off among `columns`."""
    recalls = [c for c in columns if c.startswith("recall@") and c[len("recall@"):].isdigit()]
    return max(recalls, key=lambda c: int(c[len("recall@"):])) if recalls else None


class Progress(tf.keras.callbacks.Callback):
    """The run's progress over its epochs, with the time left.

    On a terminal: one progress bar over all epochs (time left, the last
    epoch's loss), and above it one short line per evaluated epoch
    (`short_line`: the selected metric, `monitor`, and the times); no line
    is wider than `TERMINAL_COLUMNS` or the terminal. Elsewhere (a log file,
    CI): plain lines only, every column (`epoch_line`), one per evaluated
    epoch and one every `every` epochs, each with the time left; no carriage
    returns. Reads the rows `history` has just written, so it must come
    after it.
    """

    def __init__(self, history, epochs: int, every: int = 10, stream=None,
                 terminal: Optional[bool] = None, monitor: Optional[str] = None):
        super().__init__()
        self.history, self.epochs, self.every = history, int(epochs), max(1, int(every))
        self.stream = stream or sys.stderr
        if terminal is None:
            try:
                terminal = self.stream.isatty()
            except (AttributeError, ValueError, OSError):
                terminal = False
        self.terminal = bool(terminal)
        self.monitor = monitor or selected_metric(history.columns)
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
            width = min(TERMINAL_COLUMNS, _columns(self.stream) - 1)
            if evaluated:
                self.stream.write("\r\033[K" + short_line(row, self.monitor)[:width] + "\n")
            done = (epoch + 1) / self.epochs
            bar = "=" * int(done * 30)
            line = f"[{bar:<30s}] {epoch + 1}/{self.epochs} epochs, {_duration(self._left(epoch))} left"
            if "loss" in row:
                line += f" | loss {row['loss']:.4f}"
            # a bar that wrapped could not be redrawn in place
            self.stream.write("\r\033[K" + line[:width])
            if epoch + 1 >= self.epochs or getattr(self.model, "stop_training", False):    # or an early stop
                self.stream.write("\n")
            self.stream.flush()
        elif evaluated or (epoch + 1) % self.every == 0 or epoch + 1 == self.epochs:
            left = self._left(epoch)
            line = epoch_line(row, self.history.columns, off)
            self.stream.write(f"{line} | {epoch + 1}/{self.epochs}, {_duration(left)} left\n")
            self.stream.flush()


def _columns(stream) -> int:
    """The terminal's width: $COLUMNS, else the stream's terminal, else TERMINAL_COLUMNS + 1."""
    given = os.environ.get("COLUMNS", "")
    if given.isdigit() and int(given) > 0:
        return max(40, int(given))
    try:
        columns = os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, ValueError, OSError, io.UnsupportedOperation):
        columns = 0
    return max(40, columns) if columns > 0 else TERMINAL_COLUMNS + 1     # 0: size not set


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")
