"""What `fit` prints: run-level progress, inactive terms, the closing summary,
and no TensorFlow C++ start-up lines."""
import io
import os
import subprocess
import sys
from pathlib import Path

from tf_sharpcf.training.progress import Progress
from tf_sharpcf.cli.fit import main

ROOT = Path(__file__).resolve().parents[1]


def _fit(tiny_folder, out, *extra):
    return main(["--dataset", str(tiny_folder), "--method", "sharpcf", "--epochs", "12", "--warmup-epochs", "4",
                 "--window", "2", "--dim", "8", "--batch-size", "64", "--eval-every", "4", "--no-jit",
                 "--output-dir", str(out), *extra])


def test_a_non_terminal_run_prints_plain_lines_per_evaluation_and_a_summary(tiny_folder, tmp_path, capsys):
    out = tmp_path / "run"
    assert _fit(tiny_folder, out) == 0
    err = capsys.readouterr().err
    assert "\r" not in err and "\b" not in err
    epoch_lines = [line for line in err.splitlines() if line.startswith("epoch ")]
    # 12 epochs, evaluated every 4: three lines, each with the time left
    assert [line.split(" | ")[0] for line in epoch_lines] == ["epoch 4", "epoch 8", "epoch 12"]
    assert all(line.endswith(" left") and "/12, " in line for line in epoch_lines)
    # SharpCF's term is on from epoch 5 (0-based 4 = E_start): hidden before
    assert "trajectory_loss" not in epoch_lines[0] and "trajectory_loss" in epoch_lines[1]
    assert "Epoch 1/" not in err                       # no Keras bar
    assert "best  epoch" in err and "final epoch 12" in err
    assert f"python -m tf_sharpcf.export --run {out}" in err and f"tensorboard --logdir {out}/tensorboard" in err
    # history.csv keeps recording the term in every epoch
    import csv
    rows = list(csv.DictReader(open(out / "history.csv")))
    assert all(r["trajectory_loss"] != "" for r in rows)


def test_tensorboard_leaves_out_a_term_until_it_is_on(tiny_folder, tmp_path):
    import tensorflow as tf
    out = tmp_path / "run"
    assert _fit(tiny_folder, out, "--quiet") == 0
    steps = {}
    for path in (out / "tensorboard").glob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                steps.setdefault(value.tag, set()).add(event.step)
    assert steps["loss"] == set(range(1, 13))
    assert steps["trajectory_loss"] == set(range(5, 13))


def test_quiet_prints_no_progress_and_verbose_a_line_per_epoch(tiny_folder, tmp_path, capsys):
    assert _fit(tiny_folder, tmp_path / "q", "--quiet") == 0
    assert "epoch " not in capsys.readouterr().err
    assert _fit(tiny_folder, tmp_path / "v", "--verbose") == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("epoch ")]
    assert len(lines) == 12


class _History:
    columns = ["epoch", "loss", "trajectory_loss", "recall@20", "seconds", "eval_seconds"]

    def __init__(self):
        self.rows = []

    def inactive(self, epoch):
        return ("trajectory_loss",) if epoch < 2 else ()


def test_on_a_terminal_one_bar_is_redrawn_over_the_epochs():
    history, stream = _History(), io.StringIO()
    progress = Progress(history, epochs=4, every=2, stream=stream, terminal=True)
    for epoch in range(4):
        progress.on_epoch_begin(epoch)
        history.rows.append({"epoch": epoch + 1, "loss": 0.5, "trajectory_loss": 0.1, "seconds": 0.1,
                             **({"recall@20": 0.2, "eval_seconds": 0.1} if epoch % 2 else {})})
        progress.on_epoch_end(epoch)
    text = stream.getvalue()
    assert text.count("\r") >= 4 and "4/4 epochs" in text and " left | loss 0.5000" in text
    assert text.endswith("\n")
    kept = [line for line in text.replace("\r", "\n").replace("\033[K", "").splitlines() if line.startswith("epoch ")]
    assert [line.split(" | ")[0] for line in kept] == ["epoch 2", "epoch 4"]
    # on a terminal an evaluated epoch is its selected metric and times only
    # (every column stays in history.csv and TensorBoard)
    assert kept == ["epoch 2 | recall@20 0.2000 | 0.10s, eval 0.10s",
                    "epoch 4 | recall@20 0.2000 | 0.10s, eval 0.10s"]
    assert "trajectory_loss" not in text


def _fit_stderr(tiny_folder, out, **env_extra):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env.update(PYTHONPATH=str(ROOT), **env_extra)
    done = subprocess.run([sys.executable, "-m", "tf_sharpcf.fit", "--dataset", str(tiny_folder), "--epochs", "1",
                           "--warmup-epochs", "0", "--dim", "4", "--quiet", "--output-dir", str(out)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stderr


def test_command_line_hides_tensorflows_cpp_start_up_lines(tiny_folder, tmp_path):
    """XLA on (fit's default), so XLA's absl line would print if not hidden."""
    stderr = _fit_stderr(tiny_folder, tmp_path / "run")
    assert "cuInit" not in stderr and "cuda_" not in stderr
    assert "Compiled cluster using XLA" not in stderr and "absl::InitializeLog" not in stderr
    assert not [line for line in stderr.splitlines() if line.startswith(("E0000", "W0000", "I0000", "20"))]


def test_a_users_own_native_log_level_is_kept(tiny_folder, tmp_path):
    """The control: with TF_CPP_MIN_LOG_LEVEL set by the user nothing is hidden,
    so XLA's line shows (and the test above is not vacuous)."""
    stderr = _fit_stderr(tiny_folder, tmp_path / "run", TF_CPP_MIN_LOG_LEVEL="0")
    assert "Compiled cluster using XLA" in stderr
