"""What a user sees first: our warnings as one line, console output by
audience (terminal or not), and config files that name no machine's folders."""
import fcntl
import io
import json
import os
import pty
import struct
import subprocess
import sys
import termios
import time
import warnings
from pathlib import Path

import pytest

from conftest import write_lightgcn
from tf_sharpcf.cli import console
from tf_sharpcf.cli.fit import main as fit_main
from tf_sharpcf.training.progress import TERMINAL_COLUMNS, Progress, short_line

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--dim", "8", "--batch-size", "64", "--no-jit"]


# ---------------------------------------------------------------------------
# Warnings


def _python_format(message, category, filename, lineno, line=None):
    return f"PYTHON {filename}:{lineno}: {category.__name__}: {message}\n"


def test_our_warnings_are_one_line_and_others_keep_pythons_format():
    fmt = console.one_line(_python_format)
    ours = str(ROOT / "tf_sharpcf" / "data" / "interactions.py")
    assert fmt("3 cold users", UserWarning, ours, 99, "warnings.warn(...)") == "warning: 3 cold users\n"
    theirs = str(ROOT / "tests" / "conftest.py")
    assert fmt("x", UserWarning, theirs, 1) == f"PYTHON {theirs}:1: UserWarning: x\n"
    assert fmt("y", RuntimeWarning, "<string>", 1) == "PYTHON <string>:1: RuntimeWarning: y\n"
    # a folder whose name merely starts like the package's is not ours
    assert not console.is_ours(str(ROOT / "tf_sharpcf_other" / "x.py"))


def test_the_format_is_changed_only_while_a_command_runs():
    before = warnings.formatwarning
    with console.one_line_warnings():
        assert warnings.formatwarning is not before
        text = warnings.formatwarning("m", UserWarning, console.__file__, 1)
    assert warnings.formatwarning is before and text == "warning: m\n"


def _cold_folder(tmp_path):
    """Test users 6 and 7 have no training interaction: loading it warns."""
    train = {u: [(u + k) % 6 for k in range(3)] for u in range(6)}
    test = {u: [(u + 3) % 6] for u in range(6)}
    test[6], test[7] = [1], [2]
    return write_lightgcn(tmp_path / "cold", train, test)


def _fit_process(tmp_path, *python_flags, env_extra=None, **popen):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    env.update(PYTHONPATH=str(ROOT), **(env_extra or {}))
    argv = [sys.executable, *python_flags, "-m", "tf_sharpcf.fit", "--dataset", str(_cold_folder(tmp_path)),
            "--epochs", "1", "--warmup-epochs", "0", "--quiet", "--output-dir", str(tmp_path / "run"), *FAST]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300, **popen)


@pytest.mark.subprocess
def test_a_warning_from_fit_is_one_line_on_stderr(tmp_path):
    done = _fit_process(tmp_path)
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if "no training interaction" in line]
    assert len(lines) == 1 and lines[0].startswith("warning: ") and "cold/test.txt: 2 test user(s)" in lines[0]
    assert "UserWarning" not in done.stderr and "warnings.warn(" not in done.stderr
    assert "interactions.py" not in done.stderr
    json.loads(done.stdout)                                # stdout holds the metrics alone


@pytest.mark.subprocess
def test_python_W_error_still_turns_our_warnings_into_errors(tmp_path):
    done = _fit_process(tmp_path, "-W", "error")
    assert done.returncode != 0
    assert "UserWarning: " in done.stderr and "no training interaction" in done.stderr
    assert not (tmp_path / "run" / "metrics.json").exists()


@pytest.mark.subprocess
def test_pythonwarnings_ignore_still_silences_them(tmp_path):
    done = _fit_process(tmp_path, env_extra={"PYTHONWARNINGS": "ignore"})
    assert done.returncode == 0, done.stderr
    assert "no training interaction" not in done.stderr and "warning:" not in done.stderr


# ---------------------------------------------------------------------------
# Console output by audience


def _fit(tiny_folder, out, *extra):
    return fit_main(["--dataset", str(tiny_folder), "--method", "sharpcf", "--epochs", "6", "--warmup-epochs", "2",
                     "--window", "1", "--eval-every", "3", "--output-dir", str(out), *FAST, *extra])


def test_piped_stdout_gets_the_metrics_json_alone(tiny_folder, tmp_path, capsys):
    out = tmp_path / "run"
    assert _fit(tiny_folder, out, "--quiet") == 0
    printed = json.loads(capsys.readouterr().out)
    metrics = json.loads((out / "metrics.json").read_text())
    assert printed["best"] == metrics["best"] and printed["final"] == metrics["final"]


def test_on_a_terminal_stdout_gets_no_json_unless_asked(tiny_folder, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(console, "stdout_is_terminal", lambda: True)
    assert _fit(tiny_folder, tmp_path / "a") == 0
    captured = capsys.readouterr()
    assert captured.out == "" and "final epoch 6" in captured.err      # the summary says it
    assert _fit(tiny_folder, tmp_path / "b", "--json") == 0
    assert json.loads(capsys.readouterr().out)["final"]["epoch"] == 6


class _History:
    columns = ["epoch", "loss", "bpr_loss", "reg_loss", "trajectory_loss", "recall@10", "ndcg@10", "recall@20",
               "ndcg@20", "recall@100", "ndcg@100", "seconds", "eval_seconds"]

    def __init__(self):
        self.rows = []

    def inactive(self, epoch):
        return ()


def _terminal_lines(text):
    return [line for line in text.replace("\r", "\n").replace("\033[K", "").splitlines() if line]


def test_a_terminal_epoch_line_is_the_selected_metric_and_the_time_within_100_columns(monkeypatch):
    monkeypatch.setenv("COLUMNS", "160")
    history, stream = _History(), io.StringIO()
    progress = Progress(history, epochs=12345, every=1, stream=stream, terminal=True)
    progress.on_epoch_begin(12343)
    history.rows.append({"epoch": 12344, **{c: 0.123456 for c in history.columns[1:]}, "seconds": 1234.5,
                         "eval_seconds": 4321.5})
    progress.on_epoch_end(12343)
    lines = _terminal_lines(stream.getvalue())
    assert lines[0] == "epoch 12344 | recall@100 0.1235 | 1234.50s, eval 4321.50s"   # Recall at the largest K
    assert lines[0] == short_line(history.rows[-1], "recall@100")
    assert all(len(line) <= TERMINAL_COLUMNS for line in lines), lines
    assert "ndcg" not in stream.getvalue() and "trajectory_loss" not in stream.getvalue()
    # the same row in a log file keeps every column
    log = io.StringIO()
    plain = Progress(history, epochs=12345, every=1, stream=log, terminal=False)
    plain.on_epoch_begin(12343)
    plain.on_epoch_end(12343)
    assert "trajectory_loss 0.1235" in log.getvalue() and "ndcg@20 0.1235" in log.getvalue()


def test_a_narrow_terminal_clips_the_lines_instead_of_wrapping_them(monkeypatch):
    monkeypatch.setenv("COLUMNS", "45")
    history, stream = _History(), io.StringIO()
    progress = Progress(history, epochs=400, every=1, stream=stream, terminal=True)
    progress.on_epoch_begin(0)
    history.rows.append({"epoch": 1, **{c: 0.5 for c in history.columns[1:]}})
    progress.on_epoch_end(0)
    assert all(len(line) <= 44 for line in _terminal_lines(stream.getvalue()))


def _read_all(fd, proc, timeout=600):
    chunks, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            data = os.read(fd, 65536)
        except OSError:                                     # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=60)
    return b"".join(chunks).decode("utf-8", "replace")


@pytest.mark.subprocess
def test_fit_on_a_real_terminal_prints_short_lines_and_no_json(tiny_folder, tmp_path):
    """stdout and stderr on a 160-column pseudo-terminal, as in the issue."""
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 160, 0, 0))
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.Popen([sys.executable, "-m", "tf_sharpcf.fit", "--dataset", str(tiny_folder), "--epochs", "6",
                             "--warmup-epochs", "2", "--eval-every", "3", "--output-dir", str(tmp_path / "run"),
                             *FAST], stdin=subprocess.DEVNULL, stdout=terminal, stderr=terminal, env=env)
    os.close(terminal)
    try:
        text = _read_all(controller, proc)
    finally:
        os.close(controller)
    assert proc.returncode == 0, text
    lines = _terminal_lines(text)
    epoch_lines = [line for line in lines if line.startswith("epoch ")]
    assert [line.split(" | ")[0] for line in epoch_lines] == ["epoch 3", "epoch 6"], text
    assert all(" | recall@20 " in line and "eval" in line for line in epoch_lines)
    assert all(len(line) <= TERMINAL_COLUMNS for line in lines if line.startswith(("epoch ", "["))), lines
    assert "6/6 epochs" in text and "final epoch 6" in text
    assert '"best"' not in text and '"seconds_per_epoch"' not in text        # no JSON on a terminal


# ---------------------------------------------------------------------------
# Portable config files


def _named_dataset(data_dir):
    rows = {u: [(u + k) % 9 for k in range(4)] for u in range(8)}
    return write_lightgcn(data_dir / "gowalla", rows, {u: [(u + 5) % 9] for u in range(8)})


def _tune(args):
    pytest.importorskip("keras_tuner")
    from tf_sharpcf.cli.tune import main as tune_main
    return tune_main(["--dataset", "gowalla", "--no-download", "--method", "bpr", "--epochs", "1",
                      "--warmup-epochs", "0", "--lr-values", "0.005", "0.01", "--fix", "l2=0.01", "--search",
                      "random", "--max-trials", "1", "--no-final", "--quiet", *FAST, *args])


def test_best_hyperparameters_store_the_given_data_dir_relative_to_the_file(tmp_path, capsys):
    data_dir = tmp_path / "shared" / "data"
    _named_dataset(data_dir)
    directory = tmp_path / "work" / "tuning"
    assert _tune(["--data-dir", str(data_dir), "--directory", str(directory)]) == 0
    best = directory / "gowalla-bpr" / "best_hyperparameters.json"
    stored = json.loads(best.read_text())["data"]["data_dir"]
    assert stored == os.path.join("..", "..", "..", "shared", "data")
    assert (best.parent / stored).resolve() == data_dir.resolve()
    assert str(tmp_path) not in best.read_text()                 # no absolute path of this machine


def test_best_hyperparameters_store_no_data_dir_unless_one_was_given(tmp_path, monkeypatch, capsys):
    data_dir = tmp_path / "data"
    _named_dataset(data_dir)
    monkeypatch.setenv("TF_SHARPCF_DATA", str(data_dir))
    directory = tmp_path / "tuning"
    assert _tune(["--directory", str(directory)]) == 0
    best = directory / "gowalla-bpr" / "best_hyperparameters.json"
    assert json.loads(best.read_text())["data"]["data_dir"] is None


def test_fit_config_ignores_the_files_data_dir_and_reads_this_machines(tmp_path, monkeypatch, capsys):
    """A best_hyperparameters.json carried to another machine: its relative
    data_dir points nowhere there; fit uses --data-dir (else
    $TF_SHARPCF_DATA, else the cache) and records only what it was given."""
    here = tmp_path / "here"
    _named_dataset(here)
    config = {"data": {"dataset": "gowalla", "data_dir": "../../../no/such/data"},
              "train": {"method": "bpr", "epochs": 1, "warmup_epochs": 0}}
    carried = tmp_path / "carried" / "best_hyperparameters.json"
    carried.parent.mkdir()
    carried.write_text(json.dumps(config))
    out = tmp_path / "run"
    assert fit_main(["--config", str(carried), "--data-dir", str(here), "--no-download", "--output-dir", str(out),
                     "--quiet", *FAST]) == 0
    from tf_sharpcf.training import run_dir
    assert run_dir.read_config(out).data.data_dir == str(here)     # stored relative to the run
    assert str(tmp_path) not in (out / "config.json").read_text()
    monkeypatch.setenv("TF_SHARPCF_DATA", str(here))
    assert fit_main(["--config", str(carried), "--no-download", "--output-dir", str(tmp_path / "run2"),
                     "--quiet", *FAST]) == 0
    assert json.loads((tmp_path / "run2" / "config.json").read_text())["data"]["data_dir"] is None
