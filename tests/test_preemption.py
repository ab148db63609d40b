"""SIGTERM and SIGINT: a run stops after the current chunk of batches with a
checkpoint at that step, exits 143 (130), and `--resume` ends bit-identical
to a run never stopped; a full disk during a checkpoint stops the run with a
clear error and leaves the previous checkpoint to resume from; `tune` and
`pipeline` keep every finished trial and run.

The in-process tests deliver a real SIGTERM (`os.kill` of this process) from a
callback at a chosen or random chunk, so the point is exact; the subprocess
tests send it from outside at a random moment, and fill the disk with
RLIMIT_FSIZE (a write past the limit fails in the kernel with EFBIG, as a
full disk fails with ENOSPC). Data and settings are test_resume.py's: 180
interactions, batches of 32 in chunks of 2, 2, 1 and 1 batches per epoch.
"""
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from test_resume import BPR, FAST, REPO, assert_same_run, history, tiny, wait_for  # noqa: F401 (fixture)
from tf_sharpcf.cli import exits
from tf_sharpcf.cli.fit import main
from tf_sharpcf.data.input_pipeline import chunks_per_epoch, steps_per_epoch, training_dataset
from tf_sharpcf.data.readers import load_lightgcn
from tf_sharpcf.errors import Stopped
from tf_sharpcf.training import callbacks, checkpointing, signals

SHARPCF = ["--method", "sharpcf", "--epochs", "6", "--warmup-epochs", "2", "--window", "2", "--eval-every", "2",
           *FAST]
APR = ["--method", "apr", "--epochs", "5", "--warmup-epochs", "2", "--eval-every", "2", *FAST]
ARGS = {"bpr": BPR, "apr": APR, "sharpcf": SHARPCF}
CHUNKS = 4                           # per epoch; the 4th (the short batch) ends the epoch


@pytest.fixture(scope="module")
def refs(tiny, tmp_path_factory):
    """method -> the folder of its uninterrupted run (trained on first use)."""
    made = {}

    def ref(method):
        if method not in made:
            made[method] = tmp_path_factory.mktemp(f"ref-{method}") / "run"
            assert main(["--dataset", str(tiny), *ARGS[method], "--output-dir", str(made[method])]) == 0
        return made[method]
    return ref


def sigterm_at(monkeypatch, *points):
    """SIGTERM to this process when an epoch's chunk ends: (epoch, chunk) 1-based,
    counted by every `fit` call the test makes in turn (one point per call)."""
    todo = list(points)
    chunk_end = callbacks.StopOnNonFiniteLoss.on_train_batch_end

    def on_train_batch_end(self, batch, logs=None):
        chunk_end(self, batch, logs)
        if todo and (self._epoch + 1, batch + 1) == todo[0]:
            todo.pop(0)
            os.kill(os.getpid(), signal.SIGTERM)
    monkeypatch.setattr(callbacks.StopOnNonFiniteLoss, "on_train_batch_end", on_train_batch_end)


def meta(out):
    return checkpointing.read_meta(out / "checkpoints" / "last")


# ---------------------------------------------------------------------------
# The input of a resumed epoch


def batches_of(dataset, chunked):
    """Every batch of `dataset` as a tuple of numpy arrays (chunks unstacked)."""
    out = []
    for element in dataset:
        arrays = [t.numpy() for t in element]
        out += list(zip(*arrays)) if chunked else [tuple(arrays)]
    return out


@pytest.mark.parametrize("chunk", [0, 1, 3])
@pytest.mark.parametrize("first", [1, 4, 5])
def test_an_epoch_from_batch_b_holds_the_full_epochs_batches_from_b_on(tiny_folder, chunk, first):
    data = load_lightgcn(tiny_folder)             # 180 rows: 5 batches of 32 and one of 20
    full = batches_of(training_dataset(data, 32, 3, 0, 2, batches_per_chunk=chunk), chunk)
    rest = batches_of(training_dataset(data, 32, 3, 0, 2, batches_per_chunk=chunk, first_batch=first), chunk)
    assert len(full) == 12 and len(rest) == 12 - first
    for got, want in zip(rest, full[first:]):
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g, w)
    # one call into the train function per element: k = 3 from batch 1 -> [1, 4), [4, 5), short
    calls = len(list(training_dataset(data, 32, 3, 0, 1, batches_per_chunk=chunk, first_batch=first)))
    assert calls == (chunks_per_epoch(180, 32, chunk, first) if chunk else steps_per_epoch(180, 32, first))
    assert chunks_per_epoch(180, 32, 3, 1) == 3 and steps_per_epoch(180, 32, 1) == 5
    with pytest.raises(ValueError, match="first_batch 6"):
        training_dataset(data, 32, 3, 0, 1, first_batch=6)


# ---------------------------------------------------------------------------
# fit


@pytest.mark.parametrize("method", ["bpr", "apr", "sharpcf"])
def test_sigterm_after_a_random_chunk_then_resume_is_bit_identical(tiny, refs, tmp_path, monkeypatch, capsys,
                                                                   method):
    rng = random.Random()                    # not the `random` module, which training seeds
    epochs = int(ARGS[method][ARGS[method].index("--epochs") + 1])
    epoch, chunk = rng.randint(1, epochs - 1), rng.randint(1, CHUNKS)
    print(f"SIGTERM after chunk {chunk} of epoch {epoch}")
    ref, out = refs(method), tmp_path / "run"
    sigterm_at(monkeypatch, (epoch, chunk))
    assert main(["--dataset", str(tiny), *ARGS[method], "--output-dir", str(out)]) == 128 + signal.SIGTERM
    monkeypatch.undo()
    err = capsys.readouterr().err.strip().splitlines()[-1]
    saved = meta(out)
    if chunk < CHUNKS:                       # mid-epoch: 2, 4 or 5 batches of the epoch trained
        batches = {1: 2, 2: 4, 3: 5}[chunk]
        assert (saved["epoch"], saved["batches"]) == (epoch - 1, batches)
        assert err.startswith(f"stopped: SIGTERM after batch {batches} of 6 of epoch {epoch}; saved {out}")
        assert set(saved["in_epoch"]["logs"]) >= {"loss", "bpr_loss"} and saved["in_epoch"]["seconds"] > 0
        assert len(history(out)) == epoch - 1 if epoch > 1 else not (out / "history.csv").exists()
    else:                                    # the epoch's last chunk: saved at the epoch's end
        assert saved["epoch"] == epoch and "batches" not in saved
        assert err.startswith(f"stopped: SIGTERM after epoch {epoch}; saved {out}")
    assert err.endswith(f"continue with fit --resume {out}")
    assert not [p for p in out.rglob("*.tmp*")]
    assert main(["--resume", str(out), "--quiet"]) == 0
    assert_same_run(out, ref)


def test_a_run_stopped_twice_in_one_epoch_resumes_bit_identical(tiny, refs, tmp_path, monkeypatch):
    """The second stop comes in the resumed epoch, which starts at its batch 3:
    its first chunk is batches 3-4, so the checkpoint says 4 batches."""
    out = tmp_path / "run"
    sigterm_at(monkeypatch, (4, 1), (4, 1))
    assert main(["--dataset", str(tiny), *SHARPCF, "--output-dir", str(out), "--quiet"]) == 143
    assert (meta(out)["epoch"], meta(out)["batches"]) == (3, 2)
    assert main(["--resume", str(out), "--quiet"]) == 143
    assert (meta(out)["epoch"], meta(out)["batches"]) == (3, 4)
    monkeypatch.undo()
    assert main(["--resume", str(out), "--quiet"]) == 0
    assert_same_run(out, refs("sharpcf"))


@pytest.fixture
def python_sigint():
    """SIGINT as Python sets it up in a foreground process (KeyboardInterrupt):
    a shell starts background jobs with SIGINT ignored, and pytest inherits that."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def test_sigint_stops_like_sigterm_with_exit_status_130(tiny, tmp_path, monkeypatch, capsys, python_sigint):
    out = tmp_path / "run"
    chunk_end = callbacks.StopOnNonFiniteLoss.on_train_batch_end

    def on_train_batch_end(self, batch, logs=None):
        chunk_end(self, batch, logs)
        if (self._epoch, batch) == (1, 0):
            os.kill(os.getpid(), signal.SIGINT)
    monkeypatch.setattr(callbacks.StopOnNonFiniteLoss, "on_train_batch_end", on_train_batch_end)
    assert main(["--dataset", str(tiny), *BPR, "--output-dir", str(out)]) == 130
    assert "stopped: SIGINT after batch 2 of 6 of epoch 2" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler      # put back


# ---------------------------------------------------------------------------
# A real signal from outside, a full disk (subprocesses)

CHILD = r'''
import os, resource, signal, sys, time
import tf_sharpcf
from tf_sharpcf.training import callbacks
from tf_sharpcf.cli import fit

chunk_end = callbacks.StopOnNonFiniteLoss.on_train_batch_end
def on_train_batch_end(self, batch, logs=None):
    chunk_end(self, batch, logs)
    open(os.environ["MARKER"], "a").close()
    time.sleep(0.05)              # the run's chunks spread over a second or two
callbacks.StopOnNonFiniteLoss.on_train_batch_end = on_train_batch_end

epoch_end = callbacks.EpochTimer.on_epoch_end
def on_epoch_end(self, epoch, logs=None):     # under the parameter-server strategy: no chunk hook
    epoch_end(self, epoch, logs)
    open(os.environ["MARKER"], "a").close()
callbacks.EpochTimer.on_epoch_end = on_epoch_end

save = callbacks.LastCheckpoint.save
def full_disk_save(self, epochs, *args, **kwargs):
    if "FULL_AT" in os.environ and epochs == int(os.environ["FULL_AT"]):    # unset: the disk never fills
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)    # a write past the limit fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
    return save(self, epochs, *args, **kwargs)
callbacks.LastCheckpoint.save = full_disk_save

sys.exit(fit.main(sys.argv[1:]))
'''


def start_child(args, tmp_path, **env):
    return subprocess.Popen([sys.executable, "-c", CHILD, *args], cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO), "MARKER": str(tmp_path / "training"),
                                 **env},
                            stdout=subprocess.DEVNULL, stderr=open(tmp_path / "fit.log", "a"))


@pytest.mark.subprocess
def test_sigterm_at_a_random_moment_of_a_fit_process_then_resume_is_bit_identical(tiny, refs, tmp_path):
    ref, out = refs("sharpcf"), tmp_path / "run"
    proc = start_child(["--dataset", str(tiny), *SHARPCF, "--output-dir", str(out)], tmp_path)
    wait_for(tmp_path / "training", proc)
    delay = random.Random().uniform(0.0, 1.5)
    time.sleep(delay)
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout=120)
    log = (tmp_path / "fit.log").read_text()
    print(f"SIGTERM {delay:.2f} s into training: exit {code} after {time.monotonic() - sent:.2f} s; "
          f"{log.strip().splitlines()[-1]}")
    # 143: stopped with a checkpoint; 0: it had finished; -SIGTERM: it had left training (summary)
    assert code in (143, 0, -signal.SIGTERM), log
    if code == 143:
        assert "stopped: SIGTERM after" in log and "Traceback" not in log
    else:
        assert (out / "metrics.json").exists()
    assert main(["--resume", str(out), "--quiet"]) == 0
    assert_same_run(out, ref)


@pytest.mark.subprocess
def test_a_disk_full_during_a_checkpoint_stops_cleanly_and_resume_completes(tiny, refs, tmp_path):
    ref, out = refs("bpr"), tmp_path / "run"
    proc = start_child(["--dataset", str(tiny), *BPR, "--output-dir", str(out), "--quiet"], tmp_path, FULL_AT="3")
    assert proc.wait(timeout=300) == 3
    err = (tmp_path / "fit.log").read_text().strip().splitlines()[-1]
    assert err.startswith(f"error: could not write {out / 'checkpoints' / 'last'}: ") and "File too large" in err
    assert "its previous version, if any, is unchanged" in err and "{{" not in err
    assert err.endswith(f"the last good checkpoint is {out / 'checkpoints' / 'last'} (epoch 2)")
    assert not [p for p in out.rglob("*.tmp*")], "a half-written file was left"
    assert checkpointing.problem(out / "checkpoints" / "last") is None and meta(out)["epoch"] == 2
    assert not (out / "metrics.json").exists()
    assert main(["--resume", str(out), "--quiet"]) == 0          # space is back
    assert_same_run(out, ref)


@pytest.mark.slow
@pytest.mark.subprocess
def test_under_the_parameter_server_strategy_sigterm_stops_the_chief_at_the_epochs_end(tmp_path):
    from conftest import checkerboard, write_lightgcn
    from tf_sharpcf.distribute.local_cluster import LocalCluster
    data = write_lightgcn(tmp_path / "board", *checkerboard(16))
    out = tmp_path / "run"
    args = ["--dataset", str(data), "--method", "sharpcf", "--epochs", "12", "--warmup-epochs", "2", "--dim", "8",
            "--batch-size", "16", "--strategy", "parameter-server", "--eval-every", "1000", "--k", "1"]
    with LocalCluster(tmp_path, workers=1, ps=2) as cluster:
        chief = {"TF_CONFIG": cluster.tf_config("chief", 0)}
        proc = start_child([*args, "--output-dir", str(out), "--quiet"], tmp_path, **chief)
        wait_for(tmp_path / "training", proc, timeout=240)          # an epoch has ended
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=240) == 143
        err = (tmp_path / "fit.log").read_text().strip().splitlines()[-1]
        saved = meta(out)
        assert err.startswith(f"stopped: SIGTERM after epoch {saved['epoch']}; saved {out}"), err
        assert 1 <= saved["epoch"] < 12 and "batches" not in saved and len(history(out)) == saved["epoch"]
        proc = start_child(["--resume", str(out), "--quiet"], tmp_path, **chief)
        assert proc.wait(timeout=300) == 0, (tmp_path / "fit.log").read_text()[-2000:]
    assert [int(r["epoch"]) for r in history(out)] == list(range(1, 13))


def test_a_full_disk_during_the_save_on_sigterm_keeps_the_previous_checkpoint(tiny, refs, tmp_path, monkeypatch,
                                                                               capsys):
    from test_output_safety import DiskFull
    out = tmp_path / "run"
    sigterm_at(monkeypatch, (3, 2))
    real_save = callbacks.LastCheckpoint.save

    def save(self, epochs, batches=0, in_epoch=None):
        if batches:
            DiskFull(monkeypatch, ".last.tmp")
        return real_save(self, epochs, batches, in_epoch)
    monkeypatch.setattr(callbacks.LastCheckpoint, "save", save)
    assert main(["--dataset", str(tiny), *BPR, "--output-dir", str(out)]) == 3
    monkeypatch.undo()
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: could not write") and "No space left on device" in err
    assert err.endswith(f"the last good checkpoint is {out / 'checkpoints' / 'last'} (epoch 2)")
    assert not [p for p in out.rglob("*.tmp*")] and "batches" not in meta(out)
    assert main(["--resume", str(out), "--quiet"]) == 0
    assert_same_run(out, refs("bpr"))


# ---------------------------------------------------------------------------
# The signals themselves


def test_outside_training_the_signals_act_as_without_us(python_sigint):
    with exits.console.one_line_warnings(), signals.caught():
        # the process's own handlers: SIGTERM's default ends even a process blocked in C++ (a cluster task)
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
        with pytest.raises(KeyboardInterrupt), signals.deferring():
            os.kill(os.getpid(), signal.SIGINT)
            assert signals.requested() == signal.SIGINT
            os.kill(os.getpid(), signal.SIGINT)        # a second Ctrl-C stops at once
            time.sleep(1)
        assert signals.requested() is None
        with pytest.raises(Stopped) as stopped:
            with signals.deferring("the work"):
                os.kill(os.getpid(), signal.SIGTERM)
                os.kill(os.getpid(), signal.SIGTERM)   # forwarded twice: ignored
                assert signals.requested() == signal.SIGTERM
        assert stopped.value.exit_code == 143 and str(stopped.value) == \
            "SIGTERM came as the work finished; nothing was lost"
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


def test_a_stopped_command_exits_with_128_plus_the_signal():
    def command():
        raise Stopped(signal.SIGTERM, "after batch 2", "continue with it")
    assert exits.run(command) == 143


# ---------------------------------------------------------------------------
# tune and pipeline

TUNE = ["--method", "sharpcf", "--epochs", "4", "--warmup-epochs", "2", "--eval-every", "2", "--dim", "8",
        "--batch-size", "64", "--no-jit", "--quiet", "--initial-points", "2", "--max-trials", "3"]


def chunk_counter(monkeypatch, at):
    """SIGTERM at the `at`-th end of a chunk of any run's `fit` (1-based)."""
    seen = [0]
    chunk_end = callbacks.StopOnNonFiniteLoss.on_train_batch_end

    def on_train_batch_end(self, batch, logs=None):
        chunk_end(self, batch, logs)
        seen[0] += 1
        if seen[0] == at:
            os.kill(os.getpid(), signal.SIGTERM)
    monkeypatch.setattr(callbacks.StopOnNonFiniteLoss, "on_train_batch_end", on_train_batch_end)


def spy_runs(monkeypatch):
    from tf_sharpcf.training import train
    real, runs = train.train_and_evaluate, []

    def spy(config, workdir, *args, **kwargs):
        runs.append((Path(workdir).name, kwargs["start"].resume))
        return real(config, workdir, *args, **kwargs)
    monkeypatch.setattr(train, "train_and_evaluate", spy)
    return runs


def test_sigterm_during_tune_keeps_finished_trials_and_the_rerun_does_not_train_them(tiny, tmp_path, monkeypatch,
                                                                                    capsys):
    pytest.importorskip("sklearn")
    from tf_sharpcf.cli.tune import main as tune
    args = ["--dataset", str(tiny), *TUNE, "--directory", str(tmp_path / "tuning")]
    project = tmp_path / "tuning" / "tiny-sharpcf"
    with monkeypatch.context() as m:
        # ~162 training rows in batches of 64: 2 chunks per epoch, 4 per trial (epochs 3-4)
        chunk_counter(m, 5)
        runs = spy_runs(m)
        assert tune(args) == 143
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert runs == [("trial_0", False), ("trial_1", False)]
    assert err.startswith("stopped: SIGTERM in trial 1: after batch 2 of 3 of epoch 3; saved ")
    assert err.endswith("finished trials are kept: the same tune command (or tune --resume) continues the search")
    assert (project / "trial_0" / "trial_summary.json").exists()
    before = (project / "trial_0" / "metrics.json").read_text()
    with monkeypatch.context() as m:
        runs = spy_runs(m)
        assert tune(args) == 0
    assert [r for r in runs if r[0] != "final"] == [("trial_1", True), ("trial_2", False)]
    assert (project / "trial_0" / "metrics.json").read_text() == before
    rows = history(project / "trial_1")
    assert [r["epoch"] for r in rows] == ["3", "4"]
    summary = json.loads((project / "summary.json").read_text())
    assert summary["trials"] == summary["completed"] == 3


def test_sigterm_during_pipeline_keeps_finished_runs(tiny, tmp_path, monkeypatch, capsys):
    from tf_sharpcf.cli.pipeline import main as pipeline
    definition = tmp_path / "e.toml"
    definition.write_text(f'name = "tiny"\ndataset = "{tiny}"\nmethods = ["bpr", "sharpcf"]\nseeds = [0]\n'
                          "[common.model]\ndim = 8\n[common.train]\nepochs = 3\nwarmup_epochs = 1\n"
                          "batch_size = 64\njit_compile = false\n[overrides.sharpcf.train]\nwindow = 1\n")
    ref = tmp_path / "ref"
    assert pipeline([str(definition), "--results-dir", str(ref), "--quiet"]) == 0
    capsys.readouterr()
    out = tmp_path / "results"
    with monkeypatch.context() as m:
        # 2 chunks per epoch: the warm-up (epoch 1), bpr (2-3), then sharpcf's first chunk
        chunk_counter(m, 7)
        assert pipeline([str(definition), "--results-dir", str(out), "--quiet"]) == 143
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("stopped: SIGTERM in run sharpcf-seed0: after batch 2 of 3 of epoch 2; saved ")
    assert err.endswith("finished runs are kept: the same pipeline command continues the experiment")
    runs = out / "tiny" / "runs"
    assert (runs / "bpr-seed0" / "metrics.json").exists() and not (runs / "sharpcf-seed0" / "metrics.json").exists()
    with monkeypatch.context() as m:
        trained = spy_runs(m)
        assert pipeline([str(definition), "--results-dir", str(out), "--quiet"]) == 0
    assert trained == [("sharpcf-seed0", True)]
    for name in ("bpr-seed0", "sharpcf-seed0"):
        got, want = (json.loads((r / "tiny" / "runs" / name / "metrics.json").read_text()) for r in (out, ref))
        assert got["final"] == want["final"] and got["best"] == want["best"], name


@pytest.mark.slow
@pytest.mark.subprocess
def test_the_sweep_benchmark_compares_each_resume_with_its_reference(tiny, tmp_path, capsys):
    from benchmarks import preemption as bench
    results = bench.main(["sweep", "--dataset", str(tiny), "--points", "1", "--methods", "bpr",
                          "--dir", str(tmp_path / "scratch"), "--", *BPR])
    assert 1 <= len(results["points"]) <= 3 and results["bit_identical"] == len(results["points"])
    assert all(p["resume_exit"] == 0 and not p["differences"] for p in results["points"])
    assert not (tmp_path / "scratch").exists()
